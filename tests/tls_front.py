"""An HTTPS front on loopback for local end-to-end tests: Debian's Caddy with its internal CA.

The same server and the same way of getting certificates as Compose's front
(docker-compose.tls.yml, deploy/caddy/Caddyfile with ``STACK_TLS=internal``), started as a
process before a local tracking server: clients trust it through the CA's root file only, as a
teammate's machine would with ``make ca-cert``.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from local_stack.processes import free_port, stop_group

CADDY = shutil.which("caddy")
MISSING = (
    "caddy is not installed: `make test` installs Debian's (scripts/install-system-packages.sh)"
)


@dataclass
class TlsFront:
    url: str  # https://<host>:<port>
    ca_root: Path  # the internal CA's root certificate, for clients to trust
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_group(self.process.pid)

    def leaf_spki_sha256(self) -> str:
        """The server key's SPKI hash, base64: Chromium trusts exactly it with
        ``--ignore-certificate-errors-spki-list`` (it has no flag for a root file)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        host, port = self.url.removeprefix("https://").rsplit(":", 1)
        pem = ssl.get_server_certificate((host, int(port)))
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def start_tls_front(
    upstream: str,
    root: Path,
    port: int | None = None,
    host: str = "localhost",
    timeout_s: float = 30,
) -> TlsFront:
    """Caddy on ``port`` (default: a free one) of loopback, HTTPS for ``host`` (``localhost``
    or ``127.0.0.1``: the internal CA signs either) with its internal CA, proxying everything to
    ``upstream`` (``http://127.0.0.1:<port>``) with the client's Host header, as Compose's
    front does: the tracking server must allow ``<host>:<port>``
    (``MLFLOW_SERVER_ALLOWED_HOSTS``)."""
    assert CADDY is not None, MISSING
    port, http_port = port or free_port(), free_port()
    root.mkdir(parents=True, exist_ok=True)
    upstream_host = upstream.removeprefix("http://")
    caddyfile = root / "Caddyfile"
    caddyfile.write_text(
        f"""{{
    admin off
    local_certs
    skip_install_trust
    http_port {http_port}
    https_port {port}
    storage file_system {root / "data"}
}}
{host}:{port} {{
    tls internal
    reverse_proxy {upstream_host}
}}
"""
    )
    log = root / "caddy.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={"HOME": str(root), "XDG_DATA_HOME": str(root / "xdg"), "PATH": "/usr/bin:/bin"},
        )
    front = TlsFront(
        f"https://{host}:{port}",
        root / "data" / "pki" / "authorities" / "local" / "root.crt",
        process,
        log,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"caddy exited: {log.read_text()[-2000:]}")
        if front.ca_root.is_file():
            try:
                requests.get(f"{front.url}/health", verify=str(front.ca_root), timeout=2)
                return front
            except requests.RequestException:
                pass
        time.sleep(0.2)
    front.stop()
    raise RuntimeError(f"caddy did not answer on {front.url}: {log.read_text()[-2000:]}")
