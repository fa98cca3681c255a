"""How teacher work shows on the terminal: progress bars and one-line metric summaries, on stderr."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nas.infra.console import err


def progress_bar(label: str) -> Progress:
    """A transient bar with a free `info` field (e.g. the loss), gone once the work is done."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=err, transient=True)


def metrics_line(metrics: dict[str, float] | None) -> str:
    """The teacher's validation figures as printed after training or caching."""
    if not metrics:
        return "no validation metrics"
    return f"validation si-RMSE {metrics['si_rmse']:.4f}, RMSE {metrics['rmse']:.3f} m"
