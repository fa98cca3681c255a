"""The `nas` commands, one module each: parse, open a session, call the trial machinery; they never import
each other (import-linter contract in pyproject.toml)."""
