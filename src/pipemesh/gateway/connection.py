"""The NATS connection: log-in options, TLS, retries, the stream and the subscriptions.

Connects (retrying until NATS answers or the gateway stops), says each distinct
failure once on stderr (one line, no secret), makes sure the mesh's JetStream
stream exists, and subscribes to heartbeats, this host's direct messages and
broadcasts. Losing the connection makes every remote entry read inactive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.api
import nats.js.errors

from pipemesh.errors import UsageError
from pipemesh.gateway import subjects
from pipemesh.gateway.config import check_private_file
from pipemesh.gateway.outbound import Outbound

__all__ = ["Connection", "quiet_ssl_eof"]


class Connection(Outbound):
    """The gateway's one outbound NATS connection."""

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context the config asks for; UsageError naming the file that will not do."""
        cfg = self.config
        if not (cfg.tls_ca or cfg.tls_cert or self.nats_url.startswith("tls://")):
            return None
        try:
            ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot use tls_ca {cfg.tls_ca} of the gateway config ({_why(exc)}); "
                "give the PEM file of the CA that signed the NATS server's certificate"
            ) from None
        if cfg.tls_cert:
            try:
                ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(
                    f"cannot use tls_cert {cfg.tls_cert} with tls_key {cfg.tls_key} of the "
                    f"gateway config ({_why(exc)}); give the client certificate and its "
                    "private key as PEM files"
                ) from None
        return ctx

    def _check_nkey_seed(self) -> None:
        """Refuse a seed file nats-py could not use, before connecting (it would raise there)."""
        path = self.config.nkey_seed_file
        if not path:
            return
        import nkeys  # type: ignore[import-untyped]  # noqa: PLC0415 - no hints; the extra installs it

        seed = bytearray(check_private_file(Path(path), "nkey seed file").strip())
        try:
            nkeys.from_seed(seed)
        except (nkeys.NkeysError, ValueError) as exc:
            raise UsageError(
                f"the nkey seed file {path} holds no valid nkey seed ({_why(exc)}); "
                "it should hold one line starting with 'SU' (e.g. from 'nk -gen user')"
            ) from None
        finally:
            seed[:] = bytes(len(seed))  # do not keep the secret around

    async def _connect(self) -> None:
        """Connect to NATS, retrying until it answers or the gateway is stopped."""
        cfg = self.config
        options: dict[str, Any] = {
            "name": f"pipemesh-gateway-{self.host}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "ping_interval": 2,
            "max_outstanding_pings": 2,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
            "error_cb": self._on_error,
        }
        if cfg.user:
            options["user"], options["password"] = cfg.user, cfg.password
        if cfg.token:
            options["token"] = cfg.token
        if cfg.nkey_seed_file:
            self._check_nkey_seed()
            options["nkeys_seed"] = cfg.nkey_seed_file
        tls = self._tls()
        if tls is not None:
            options["tls"] = tls
        while not self._stop.is_set():
            # nats-py retries a failed first connect itself (forever: max_reconnect_attempts
            # is -1); each failure reaches _on_error, which says it once. SIGTERM ends the wait.
            connecting = asyncio.create_task(nats.connect(self.nats_url, **options))
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
                break
            try:
                self._nc = connecting.result()
                break
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                await self._on_error(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
        if self._nc is None:
            return
        nc = self._nc
        self.remote.max_body_cap = max(1024, min(nc.max_payload, self.max_message_bytes) - 4096)
        self._js = nc.jetstream(timeout=5.0)
        await self._ensure_stream()
        await nc.subscribe(subjects.heartbeat_all(self.mesh), cb=self._on_heartbeat)
        await nc.subscribe(subjects.inbound_direct(self.mesh, self.host), cb=self._on_direct)
        await nc.subscribe(subjects.inbound_broadcasts(self.mesh), cb=self._on_broadcast)
        self.connected.set()
        self._last_error = ""
        self._log(f"connected to {_shown(self.nats_url)} as host {self.host} in mesh {self.mesh}")

    async def _ensure_stream(self) -> None:
        config = nats.js.api.StreamConfig(
            name=subjects.stream_name(self.mesh),
            subjects=[subjects.stream_subjects(self.mesh)],
            storage=nats.js.api.StorageType.FILE,
            # A message is gone from the stream once its host's gateway acked it: the
            # hosts' consumers filter disjoint subjects, as a work queue requires.
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)
        except (nats.errors.Error, TimeoutError) as exc:
            self._log(
                f"no JetStream stream {config.name} ({str(exc)[:160] or type(exc).__name__}): "
                "messages to durable remote agents wait in their spools here; "
                "start nats-server with -js"
            )

    async def _on_disconnect(self) -> None:
        self.connected.clear()
        if self._stop.is_set():
            return  # our own close()
        self._log("lost NATS; remote agents read inactive until it returns")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._updates, self.remote.set_all_unreachable)
        self._seen_hosts.clear()

    async def _on_reconnect(self) -> None:
        self.connected.set()
        self._last_error = ""
        self._log("NATS is back")

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        self.events.error("gateway_nats_error", text[:300])
        # Said once per outage (until connected again): a refused login is often followed
        # by "connection reset" on the next try, and two reasons alternating must not
        # print a line per retry. Every error is in the errors log all the same.
        if not self.connected.is_set() and not self._last_error:
            self._last_error = text
            self._log(f"cannot reach NATS at {_shown(self.nats_url)} ({text[:200]}); retrying")


def _shown(url: str) -> str:
    """``url`` (or each of a comma-separated list) without its password or token."""

    def hide(m: re.Match[str]) -> str:
        user, colon, _ = m[2].partition(":")
        return f"{m[1]}{user}:***@" if colon else f"{m[1]}***@"  # no colon: a token

    return ",".join(re.sub(r"^([^/]*//)([^@/]*)@", hide, u) for u in url.split(","))


def _why(exc: BaseException) -> str:
    """An exception as a short reason, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return (str(exc) or type(exc).__name__)[:200]


class _QuietSslEof(logging.Filter):
    """Drop asyncio's warning that nats-py's stream protocol asks to half-close a TLS link.

    asyncio logs ``returning true from eof_received() has no effect when using ssl``
    when a TLS connection ends; the connection closes as it should, and the line,
    printed raw on stderr, would be the only one there not from the gateway.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


@contextlib.contextmanager
def quiet_ssl_eof() -> Iterator[None]:
    """While the gateway runs, asyncio's harmless TLS half-close warning is not printed."""
    flt = _QuietSslEof()
    log = logging.getLogger("asyncio")
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)
