"""`nas run`'s closing table: every figure it shows is whole, whatever the terminal's width."""

from __future__ import annotations

import io
import re

import pytest
from helpers.study_builder import build_study, demo_trials, make_config
from rich.console import Console


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("summary")
    return build_study(make_config(root / "results", study="a-study-with-a-long-name", max_si_rmse=0.28),
                       demo_trials())


def rendered(renderable, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=True, color_system=None).print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
def test_each_shown_figure_is_whole_at_any_width(study, width):
    from nas.commands.run.search import SUMMARY_COLUMNS, summary_rows, summary_table

    text = rendered(summary_table(study, width), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    table = summary_table(study, width)
    shown = [c.header for c in table.columns] if hasattr(table, "columns") else ["trial", "score", "si-RMSE",
                                                                                 "latency ms"]
    rows = summary_rows(study)
    assert rows and set(shown) <= set(SUMMARY_COLUMNS)
    cells = set(re.findall(r"[^\s│┃━─┏┓┗┛┡┩┳╇┴┻└┘┌┐:,]+(?:,\d{3})*", text))
    for row in rows:  # each shown column's figures stand whole in the output
        for name in shown:
            if row[name]:
                assert row[name] in cells or row[name] in text.split(), (name, row[name], text)


def test_a_wide_terminal_shows_every_column_and_a_narrow_one_names_what_it_leaves_out(study):
    from nas.commands.run.search import SUMMARY_COLUMNS, summary_table

    wide = summary_table(study, 200)
    assert [c.header for c in wide.columns] == list(SUMMARY_COLUMNS)
    at_80 = summary_table(study, 80)
    shown = [c.header for c in at_80.columns]
    assert shown[:3] == ["trial", "score", "si-RMSE"] and "latency ms" in shown and "MMACs" not in shown
    assert "not shown at 80 columns: " in at_80.caption and "MMACs" in at_80.caption
    text = rendered(at_80, 80)
    header = next(line for line in text.splitlines() if "trial" in line and "score" in line)
    assert all(name in header for name in shown)  # headers whole too ("tr… sco…" was the bug)
    # Too narrow for even the four kept columns: one stacked entry per trial, breaking between figures.
    narrow = rendered(summary_table(study, 30), 30)
    assert "trial 3: score" in narrow.replace("\n", " ") and "…" not in narrow
