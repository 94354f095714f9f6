"""``pipemesh gateway``: run this host's gateway to a NATS server (docs/gateway.md).

Cheap to import: nats-py and the bridge load only when the command runs, and a
missing ``gateway`` extra is a one-line error saying how to install it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from pipemesh.errors import UsageError

__all__ = ["gateway_command"]


@click.command("gateway")
@click.option(
    "--nats",
    "nats_url",
    default=None,
    help="NATS server URL, e.g. nats://nats.lan:4222 (default: url in the --config file).",
)
@click.option("--mesh", default="default", show_default=True, help="Mesh name shared by the hosts.")
@click.option("--host", "host", default=None, help="This host's name (default: the host name).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Credentials file (TOML, mode 0600): user/password, nkey seed file or TLS.",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between this host's announcements.",
)
@click.option(
    "--ack-wait",
    "ack_wait_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds JetStream waits for a durable delivery before re-delivering.",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(4096, 64 << 20),
    default=1 << 20,
    show_default=True,
    help="Largest message frame taken from NATS (also capped by the server's max_payload).",
)
@click.pass_context
def gateway_command(
    ctx: click.Context,
    nats_url: str | None,
    mesh: str,
    host: str | None,
    config_path: Path | None,
    heartbeat_s: float,
    ack_wait_s: float,
    max_message_bytes: int,
) -> None:
    """Bridge this host's mesh to the other hosts' meshes over NATS."""
    from pipemesh.gateway.config import GatewayConfig, load_config  # noqa: PLC0415

    config = load_config(config_path) if config_path is not None else GatewayConfig()
    url = nats_url or config.url
    if not url:
        raise UsageError('give the NATS server: --nats URL, or url = "..." in [nats] of --config')
    if not 0.05 <= heartbeat_s <= 60 or not 0.5 <= ack_wait_s <= 3600:
        raise UsageError("--heartbeat must be 0.05..60 s and --ack-wait 0.5..3600 s")
    try:
        from pipemesh.gateway.bridge import Gateway  # noqa: PLC0415
    except ImportError as exc:
        raise UsageError(
            f"pipemesh gateway needs nats-py ({exc.name} is missing): "
            "pip install 'pipemesh[gateway]'"
        ) from None
    home_arg = getattr(ctx.find_root().obj, "home_arg", None)
    from pipemesh.home import MeshHome  # noqa: PLC0415

    gw = Gateway(
        url,
        mesh=mesh,
        host=host,
        home=MeshHome.open(home_arg),
        config=config,
        heartbeat_s=heartbeat_s,
        ack_wait_s=ack_wait_s,
        max_message_bytes=max_message_bytes,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        gw.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    gw.run()
