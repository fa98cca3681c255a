"""Infrastructure below every building block: the study database, consoles, signals, atomic files."""
