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
                  sustained: Annotated[float, typer.Option(
                      "--sustained", min=0, metavar="SECONDS",
                      help="also run the reference model without pause this long: latency first against "
                           "last stretch, temperature and throttling under load")] = 0.0) -> None:
    """Connect to each device, verify it, time one small model; exit 1 if any fails."""
    from nas.hardware.check import check_devices
    from nas.infra.third_party import route_to_log

    route_to_log(Path.home() / ".cache" / "nas" / "logs", "devices")  # TensorFlow builds the reference model
    raise typer.Exit(check_devices(file, storage_url=storage, trust_new_host_keys=trust_new_host_keys,
                                  sustained_s=sustained))
