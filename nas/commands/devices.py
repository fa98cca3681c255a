"""`nas devices check`: connect to each device of a profile, verify it, time one small model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import TrustNewHostKeys

devices_app = typer.Typer(help="Target devices (hardware profiles).", no_args_is_help=True)


@devices_app.command("check")
def devices_check(file: Annotated[Path, typer.Argument(help="hardware profile or pool YAML")],
                  storage: Annotated[Optional[str], typer.Option(
                      help="study database: lease each device so a running search is not disturbed")] = None,
                  trust_new_host_keys: TrustNewHostKeys = False,
                  sustained: Annotated[Optional[float], typer.Option(
                      "--sustained", metavar="SECONDS",
                      help="also run the reference model without pause this long (more than 0): latency first "
                           "against last stretch, temperature and throttling under load")] = None) -> None:
    """Connect to each device, verify it, time one small model; exit 1 if any fails."""
    import math

    from nas.errors import ConfigError
    from nas.hardware.check import check_devices
    from nas.infra.third_party import route_to_log

    if sustained is not None and not (math.isfinite(sustained) and sustained > 0):
        raise ConfigError(None, f"--sustained: seconds of sustained load must be a finite number above 0, got "
                                f"{sustained:g} (leave the flag out for none)")

    route_to_log(Path.home() / ".cache" / "nas" / "logs", "devices")  # TensorFlow builds the reference model
    raise typer.Exit(check_devices(file, storage_url=storage, trust_new_host_keys=trust_new_host_keys,
                                  sustained_s=sustained or 0.0))
