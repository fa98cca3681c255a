"""`nas proxy-check`: re-train K trials at a longer budget and measure how the rankings agree. The check itself
is `check.py`, imported when the command runs so that `nas --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import (BudgetOption, ConfigFile, Data, Hardware, NoDistill, Pretrained, Results, Storage,
                                  StudyName)
from nas.config import BUDGETS, load_config
from nas.infra.console import out
from nas.infra.third_party import route_to_log

def proxy_check_cmd(trials: Annotated[int, typer.Option(help="K, complete trials to re-train (at least 3): the "
                                                        "top ceil(K/2) by Final Score and the rest spread evenly "
                                                        "through the ranking")],
                    config_file: ConfigFile = None, study: StudyName = None, storage: Storage = None,
                    budget: BudgetOption = "full",
                    seed: Annotated[Optional[int], typer.Option(
                        help="trial N re-trains with seed SEED + N, as the search trained it (default 0); also "
                             "seeds the bootstrap")] = None,
                    data: Data = None,
                    hardware: Hardware = None,
                    no_distill: NoDistill = False, results: Results = None,
                    out_file: Annotated[Optional[Path], typer.Option(
                        "--out", help="JSON file (default RESULTS/proxy_check/STUDY.json)")] = None,
                    pretrained: Pretrained = None) -> None:
    """Re-train K trials at a longer budget and measure how their ranking agrees with the search's
    (Kendall tau with its interval, Spearman rho); resumable, stored in the study and a JSON file."""
    from nas.commands.proxy_check.check import default_out, proxy_check, summary_lines

    config = load_config(config_file, study=study, storage=storage, budget=budget, seed=seed, data=data,
                         hardware=hardware, results=results, distill=False if no_distill else None,
                         pretrained=pretrained)
    route_to_log(config.results / "logs", "proxy-check")
    summary = proxy_check(config, trials, BUDGETS[config.budget], out_file)
    for line in summary_lines(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"written: {out_file or default_out(config)} and the study attribute proxy_check", highlight=False,
              markup=False, soft_wrap=True)
