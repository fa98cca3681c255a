"""Importers of public depth data sets and plain folders into the MAI 2021 layout (`nas data import`).

One module per source reads and checks it into an `ImportPlan`; `writer.write_import` writes any plan the
same way (temporary folder, resume, data check, `import.json`). See docs/data-import.md.
"""
