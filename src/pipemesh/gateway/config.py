"""Gateway credentials: a TOML file readable by its owner only (docs/gateway.md).

The file holds secrets, so it must be a regular file owned by the user running
the gateway, with no permission bits for group or others (``chmod 600``);
anything else is refused with a one-line :class:`~pipemesh.errors.UsageError`
before a byte of it is used. A referenced nkey seed file is held to the same
rule, and so is a TLS client key. Format::

    [nats]
    url = "nats://nats.lan:4222"  # used when --nats is not given
    user = "build-box"            # user/password authentication, or
    password = "..."
    nkey_seed_file = "/home/me/.config/pipemesh/gw.nk"   # an nkey seed, and/or
    tls_ca = "/etc/ssl/nats-ca.pem"                      # TLS (server check),
    tls_cert = "/home/me/.config/pipemesh/gw.crt"        # with a client certificate
    tls_key = "/home/me/.config/pipemesh/gw.key"
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipemesh.errors import UsageError

__all__ = ["GatewayConfig", "check_private_file", "load_config"]

MAX_CONFIG_BYTES: Final = 64 * 1024
_KEYS: Final = frozenset(
    ("url", "user", "password", "token", "nkey_seed_file", "tls_ca", "tls_cert", "tls_key")
)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What a gateway needs to log in to NATS; every field optional."""

    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"GatewayConfig(url={self.url!r}, user={self.user!r}, secrets hidden)"


def check_private_file(path: Path, what: str) -> bytes:
    """Read ``path`` if it is a regular file of ours with mode 0600 (or 0400); else UsageError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot open the {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"the {what} {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise UsageError(
                f"the {what} {path} is owned by uid {st.st_uid}, not by you "
                f"(uid {os.geteuid()}); it holds secrets: use a file of your own"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise UsageError(
                f"the {what} {path} has mode {mode:04o}; it holds secrets: run 'chmod 600 {path}'"
            )
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"the {what} {path} is over {MAX_CONFIG_BYTES} bytes")
    return data


def load_config(path: Path) -> GatewayConfig:
    """Read and check a gateway config file.

    Raises:
        UsageError: the file is not private, not TOML, or holds unknown keys
            or values of the wrong type.
    """
    data = check_private_file(path, "gateway config")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"the gateway config {path} is not valid TOML: {exc}") from None
    section = doc.get("nats", {})
    if not isinstance(section, dict):
        raise UsageError(f"the gateway config {path}: [nats] is not a table")
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise UsageError(
            f"the gateway config {path} has unknown key(s) {', '.join(unknown)} in [nats]; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    values: dict[str, str] = {}
    for key, value in section.items():
        if not isinstance(value, str):
            raise UsageError(f"the gateway config {path}: nats.{key} is not a string")
        values[key] = value
    cfg = GatewayConfig(**values)
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise UsageError(f"the gateway config {path}: give both tls_cert and tls_key, or neither")
    if cfg.nkey_seed_file:
        check_private_file(Path(cfg.nkey_seed_file), "nkey seed file")
    if cfg.tls_key:
        check_private_file(Path(cfg.tls_key), "TLS key file")
    return cfg
