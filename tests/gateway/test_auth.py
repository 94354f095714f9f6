"""Gateways logging in to a real nats-server with an nkey, and over TLS with client certificates.

The nkeys and certificates are made here, in the test's temp dir: an nkey user
(``nkeys``), and a CA with a server and a client certificate (``cryptography``).
A wrong key or an untrusted CA is said once on stderr, in one line with no
traceback and no secret, and the gateway keeps retrying (docs/gateway.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipemesh.errors import UsageError
from pipemesh.gateway.bridge import Gateway
from pipemesh.gateway.config import load_config
from pipemesh.gateway.connection import _shown
from pipemesh.home import MeshHome
from tests.conftest import wait_for
from tests.gateway.conftest import Cluster, Host

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(240)]


def _private(path: Path, data: str | bytes) -> Path:
    """Write a secret file with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def _nkey_user(tmp: Path, name: str) -> tuple[str, Path]:
    """A new nkey user: its public key, and its seed in a 0600 file."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    return public, _private(tmp / f"{name}.nk", seed)


def _gateway_config(tmp: Path, name: str, **values: str) -> Path:
    body = "".join(f'{k} = "{v}"\n' for k, v in values.items())
    return _private(tmp / f"{name}.toml", "[nats]\n" + body)


def _restart_nats(cluster: Cluster, server_conf: str) -> None:
    cluster.stop_nats()
    conf = cluster.tmp / "nats-auth.conf"
    conf.write_text(server_conf)
    cluster.nats_extra = ["-c", str(conf)]
    cluster.start_nats()


def _refused_said_once(host: Host, words: str, secret: str) -> None:
    """The gateway says once, in one line, why it cannot log in; it keeps running (retrying)."""
    wait_for(lambda: "cannot reach NATS" in host.gateway_output(), 60, 0.05)
    out = host.gateway_output()
    lines = [line for line in out.splitlines() if "cannot reach NATS" in line]
    assert len(lines) == 1, out
    assert words in lines[0].lower(), out
    assert "retrying" in lines[0], out
    assert "Traceback" not in out, out
    assert secret not in out, out
    assert host.gateway_proc is not None
    assert host.gateway_proc.poll() is None, out  # still retrying, as documented
    host.stop_gateway()
    assert host.gateway_proc.returncode == 0, host.gateway_output()
    assert "Traceback" not in host.gateway_output()


def _bridged(cluster: Cluster) -> None:
    """alice@a asks bob@b and gets the reply: a message each way through the server."""
    a, b = cluster.hosts
    b.agent("bob")
    alice = a.agent("alice")
    a.wait_remote("bob@b", 60)
    r = alice.command({"op": "ask", "to": "bob@b", "body": "over auth", "timeout": 30})
    assert r == {"ok": True, "body": "re:over auth", "sender": "bob@b"}, r


def test_gateways_log_in_with_an_nkey_seed_file(cluster: Cluster) -> None:
    """A server with an nkey user: a wrong seed is refused (said once), the right one bridges."""
    a, b = cluster.hosts
    public, seed_file = _nkey_user(cluster.tmp, "gw")
    _, wrong_seed = _nkey_user(cluster.tmp, "intruder")
    _restart_nats(cluster, f'authorization {{\n  users = [ {{ nkey: "{public}" }} ]\n}}\n')
    bad = _gateway_config(cluster.tmp, "bad", nkey_seed_file=str(wrong_seed))
    a.start_gateway("--config", str(bad))
    _refused_said_once(a, "authorization violation", wrong_seed.read_text())

    good = _gateway_config(cluster.tmp, "good", nkey_seed_file=str(seed_file))
    a.start_gateway("--config", str(good))
    b.start_gateway("--config", str(good))
    _bridged(cluster)
    assert seed_file.read_text() not in a.gateway_output() + b.gateway_output()


class _Pki:
    """A CA and certificates it signs, written as PEM files under ``tmp``."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.tmp = tmp
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pipemesh test CA {name}")])
        self.cert = (
            self._builder(subject, self.key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = tmp / f"{name}-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, cn: str, *, server: bool) -> tuple[Path, Path]:
        """A certificate for ``cn`` (a server one valid for the test's NATS addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(subject, key.public_key())
            .issuer_name(self.cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:  # loopback (fallback mode) and the NATS namespace's veth ends
            ips = ["127.0.0.1", *(f"10.231.{i}.1" for i in range(1, 4))]
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file = self.tmp / f"{self.name}-{cn}.crt"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert_file, _private(self.tmp / f"{self.name}-{cn}.key", key_pem)


def test_gateways_connect_over_tls_with_client_certificates(cluster: Cluster) -> None:
    """TLS, clients verified: an untrusted CA is refused (said once); the right CA bridges."""
    a, b = cluster.hosts
    pki = _Pki(cluster.tmp, "good")
    other = _Pki(cluster.tmp, "other")  # a CA that did not sign the server
    server_crt, server_key = pki.issue("nats-server", server=True)
    client_crt, client_key = pki.issue("gateway", server=False)
    _restart_nats(
        cluster,
        "tls {\n"
        f'  cert_file: "{server_crt}"\n'
        f'  key_file: "{server_key}"\n'
        f'  ca_file: "{pki.ca_file}"\n'
        "  verify: true\n"
        "  timeout: 5\n"
        "}\n",
    )
    files = {"tls_cert": str(client_crt), "tls_key": str(client_key)}
    bad = _gateway_config(cluster.tmp, "untrusted", tls_ca=str(other.ca_file), **files)
    a.start_gateway("--config", str(bad))
    _refused_said_once(a, "certificate verify failed", client_key.read_text())

    good = _gateway_config(cluster.tmp, "tls", tls_ca=str(pki.ca_file), **files)
    a.start_gateway("--config", str(good))
    b.start_gateway("--config", str(good))
    _bridged(cluster)
    for host in (a, b):  # stopped over TLS: stderr holds the gateway's own lines only
        host.stop_gateway()
        out = host.gateway_output()
        assert all(line.startswith("pipemesh gateway ") for line in out.splitlines()), out


def _run_gateway(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "pipemesh", "gateway", "--nats", "nats://127.0.0.1:1"),
            *("--host", "x", "--config", str(config)),
        ],
        env={**os.environ, "PIPEMESH_HOME": str(config.parent / "home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("CA not PEM", "cannot use tls_ca"),
        ("key not matching", "cannot use tls_cert"),
        ("seed not a seed", "holds no valid nkey seed"),
    ],
)
def test_unusable_tls_files_or_nkey_seed_are_refused_in_one_line(
    tmp_path: Path, case: str, expected: str
) -> None:
    """TLS files or an nkey seed that cannot be used: one line naming the file, exit 2."""
    pki = _Pki(tmp_path, "ca")
    crt, _ = pki.issue("gateway", server=False)
    _, other_key = pki.issue("other", server=False)
    not_pem = _private(tmp_path / "not-pem.txt", "hello\n")
    if case == "CA not PEM":
        values = {"tls_ca": str(not_pem)}
    elif case == "key not matching":
        values = {"tls_ca": str(pki.ca_file), "tls_cert": str(crt), "tls_key": str(other_key)}
    else:
        values = {"nkey_seed_file": str(_private(tmp_path / "junk.nk", "SUAJUNKJUNK\n"))}
    done = _run_gateway(_gateway_config(tmp_path, "gw", **values))
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "unexpected" not in done.stderr


def test_tls_files_are_checked_before_use(tmp_path: Path) -> None:
    """A missing CA file is named (no OSError escapes); a client key others can read is refused."""
    pki = _Pki(tmp_path, "ca")
    crt, key = pki.issue("gateway", server=False)
    missing = _gateway_config(tmp_path, "missing", tls_ca=str(tmp_path / "nowhere.pem"))
    gw = Gateway("nats://127.0.0.1:1", host="x", home=_home(tmp_path), config=load_config(missing))
    with pytest.raises(UsageError, match=r"cannot use tls_ca .*nowhere\.pem .*No such file"):
        gw._tls()
    gw.events.close()
    os.chmod(key, 0o644)
    shared = _gateway_config(tmp_path, "shared", tls_cert=str(crt), tls_key=str(key))
    with pytest.raises(UsageError, match=r"TLS key file .* has mode 0644.*chmod 600"):
        load_config(shared)


def _home(tmp_path: Path) -> MeshHome:
    home = tmp_path / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    return MeshHome.open(home)


def test_a_password_in_the_nats_url_is_never_printed_or_logged(tmp_path: Path) -> None:
    """``nats://user:password@host`` works as a URL, but the log lines name it without the password.

    Regression: "cannot reach NATS at nats://u:<password>@..." (and "connected to ...")
    printed the URL whole on stderr.
    """
    home = _home(tmp_path).root
    out = tmp_path / "gateway.log"
    secret = "s3cretPW-" + os.urandom(4).hex()
    url = f"nats://u:{secret}@127.0.0.1:1"
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipemesh", "gateway", "--host", "x", "--nats", url],
            env={**os.environ, "PIPEMESH_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for(lambda: "cannot reach NATS" in out.read_text(), 60, 0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = out.read_text()
    assert "nats://u:***@127.0.0.1:1" in text, text
    logged = [p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()]
    assert not any(secret in t for t in [text, *logged]), text
    shown = _shown(f"nats://{secret}@h:1,tls://u:{secret}@h2,nats://h3:4222")
    assert shown == "nats://***@h:1,tls://u:***@h2,nats://h3:4222"


def test_the_nats_url_may_come_from_the_config_file(tmp_path: Path) -> None:
    """``url`` in [nats] of the private config is used when --nats is not given.

    Regression: the key was accepted but --nats was required, so the URL (the natural
    place for ``nats://user:password@host``) was never used.
    """
    home = _home(tmp_path).root
    secret = "s3cretPW-" + os.urandom(4).hex()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[nats]\nurl = "nats://u:{secret}@127.0.0.1:1"\n')
    cfg.chmod(0o600)
    out = tmp_path / "gateway.log"
    with open(out, "w") as log:
        argv = [sys.executable, "-m", "pipemesh", "gateway", "--host", "x", "--config", str(cfg)]
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "PIPEMESH_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for(lambda: "cannot reach NATS" in out.read_text() or proc.poll() is not None, 60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = out.read_text()
    assert "cannot reach NATS at nats://u:***@127.0.0.1:1" in text, text
    assert secret not in text
    done = subprocess.run(
        [sys.executable, "-m", "pipemesh", "gateway", "--host", "x"],
        env={**os.environ, "PIPEMESH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "--nats URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
