"""Telling an error that may pass from a final one (providers/common.py and the PostgreSQL
provider's SQLSTATE and message classification), case by case. The TLS errors are real ones,
made by handshakes in memory against a certificate made here."""

from __future__ import annotations

import datetime
import errno
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.errors import ClusterError, TransientError
from tether.providers.common import cluster_error, is_final, is_transient, rewrap
from tether.providers.postgres import _transient as pg_transient

# -- TLS errors, made for real -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("tether.test")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    base = tmp_path_factory.mktemp("tls")
    cert_file, key_file = base / "cert.pem", base / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _client_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLError:
    """Run a TLS handshake in memory; the client's failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="tether.test")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        for end in (c, s):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if end is c:
                    return exc
                c_in.write(s_out.read())  # the server's alert reaches the client
                try:
                    c.do_handshake()
                except ssl.SSLError as client_exc:
                    return client_exc
                return exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    raise AssertionError("the handshake did not fail")


def _server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


def _unverified_certificate(cert: tuple[Path, Path]) -> BaseException:
    return _handshake(_client_context(verify=True), _server_context(cert))


def _protocol_mismatch(cert: tuple[Path, Path]) -> BaseException:
    client = _client_context(verify=False)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    server = _server_context(cert)
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    return _handshake(client, server)


def _wrong_version_number(_: tuple[Path, Path]) -> BaseException:
    """A client speaking TLS to something that answers in plain text."""
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = _client_context(verify=False).wrap_bio(c_in, c_out, server_hostname="tether.test")
    with pytest.raises(ssl.SSLWantReadError):
        c.do_handshake()
    c_in.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ssl.SSLError) as err:
        c.do_handshake()
    return err.value


def _eof_mid_handshake(_: tuple[Path, Path]) -> BaseException:
    """The server goes away during the handshake."""
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = _client_context(verify=False).wrap_bio(c_in, c_out, server_hostname="tether.test")
    with pytest.raises(ssl.SSLWantReadError):
        c.do_handshake()
    c_in.write_eof()
    with pytest.raises(ssl.SSLEOFError) as err:
        c.do_handshake()
    return err.value


TLS_CASES: list[tuple[str, Callable[[tuple[Path, Path]], BaseException], type, bool]] = [
    ("unverified certificate", _unverified_certificate, ssl.SSLCertVerificationError, False),
    ("protocol version mismatch", _protocol_mismatch, ssl.SSLError, False),
    ("wrong version number", _wrong_version_number, ssl.SSLError, False),
    ("EOF mid-handshake", _eof_mid_handshake, ssl.SSLEOFError, True),
]


@pytest.mark.parametrize(("make", "kind", "transient"),
                         [case[1:] for case in TLS_CASES], ids=[case[0] for case in TLS_CASES])
def test_real_tls_failures(server_cert: tuple[Path, Path],
                           make: Callable[[tuple[Path, Path]], BaseException], kind: type,
                           transient: bool) -> None:
    exc = make(server_cert)
    assert isinstance(exc, kind), repr(exc)
    assert is_transient(exc) is transient, repr(exc)
    assert is_final(exc) is not transient, repr(exc)
    # the same when a client library wraps it, or only quotes its message
    wrapped = OSError(f"could not connect: {exc}")
    wrapped.__cause__ = exc
    assert is_transient(wrapped) is transient
    assert is_transient(Exception(str(exc))) is transient, str(exc)


# -- exceptions by type --------------------------------------------------------------------------


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


EXCEPTION_CASES: list[tuple[str, BaseException, bool]] = [
    # TLS cut mid-way: may pass
    ("SSLEOFError", ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol"),
     True),
    ("SSLZeroReturnError", ssl.SSLZeroReturnError(ssl.SSL_ERROR_ZERO_RETURN,
                                                  "TLS/SSL connection has been closed (EOF)"),
     True),
    ("SSLSyscallError", ssl.SSLSyscallError(ssl.SSL_ERROR_SYSCALL, "Some I/O error occurred"),
     True),
    ("SSLEOFError as a cause", _chained(RuntimeError("query failed"), ssl.SSLEOFError(
        ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")), True),
    # TLS that does not fit: final
    ("SSLCertVerificationError", ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"),
     False),
    ("SSLError wrong version number", ssl.SSLError(
        1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"), False),
    ("SSLError unsupported protocol", ssl.SSLError(
        1, "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol (_ssl.c:1006)"), False),
    ("SSLError alert protocol version", ssl.SSLError(
        1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:1006)"),
     False),
    ("cert failure as a cause", _chained(OSError("connect failed"), ssl.SSLCertVerificationError(
        1, "certificate verify failed")), False),
    # as before
    ("ECONNREFUSED", OSError(errno.ECONNREFUSED, "Connection refused"), True),
    ("ECONNRESET", ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    ("EPIPE", OSError(errno.EPIPE, "Broken pipe"), True),
    ("TimeoutError", TimeoutError("timed out"), True),
    ("EAI_AGAIN", socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
    ("EAI_NONAME", socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
    ("unresolvable name as a cause", _chained(ConnectionError("connect failed"), socket.gaierror(
        socket.EAI_NONAME, "Name or service not known")), False),
    ("EACCES", PermissionError(errno.EACCES, "Permission denied"), False),
    ("ValueError", ValueError("bad value"), False),
]


@pytest.mark.parametrize(("exc", "transient"), [case[1:] for case in EXCEPTION_CASES],
                         ids=[case[0] for case in EXCEPTION_CASES])
def test_exceptions(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


# -- messages (what a client library says, e.g. libpq's text in psycopg's error) ---------------

MESSAGE_CASES: list[tuple[str, bool]] = [
    # PostgreSQL out of connection slots, starting or stopping: may pass
    ("sorry, too many clients already", True),
    ("remaining connection slots are reserved for roles with the SUPERUSER attribute", True),
    ("remaining connection slots are reserved for non-replication superuser connections", True),
    ("the database system is not yet accepting connections", True),
    ("the database system is starting up", True),
    ("the database system is shutting down", True),
    # TLS cut mid-way: may pass
    ("SSL connection has been closed unexpectedly", True),
    ("SSL SYSCALL error: EOF detected", True),
    ("SSL error: unexpected eof while reading", True),
    ("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol (_ssl.c:1006)",
     True),
    # TLS that does not fit: final
    ("SSL error: certificate verify failed", False),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate "
     "(_ssl.c:1006)", False),
    ("SSL error: tlsv1 alert unknown ca", False),
    ('server certificate for "db.example" does not match host name "other.example"', False),
    ("SSL error: wrong version number", False),
    ("SSL error: unsupported protocol", False),
    ("SSL error: tlsv1 alert protocol version", False),
    ("server does not support SSL, but SSL was required", False),
    # any other TLS failure is not transient (as before, when "ssl:" made it final)
    ("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac", False),
    # as before
    ("server closed the connection unexpectedly", True),
    ("the database system is in recovery mode", True),
    ("terminating connection due to administrator command", True),
    ("Connection refused", True),
    ("timeout expired", True),
    ("Lost connection to MySQL server during query", True),
    ("Too many connections", True),
    ("could not translate host name \"nowhere.invalid\" to address: Name or service not known",
     False),
    ("password authentication failed for user \"postgres\"", False),
    ("permission denied to create database", False),
    ("the database system is not accepting connections", False),  # hot standby off: an admin's
]


@pytest.mark.parametrize(("message", "transient"), MESSAGE_CASES,
                         ids=[case[0][:50] for case in MESSAGE_CASES])
def test_messages(message: str, transient: bool) -> None:
    assert is_transient(Exception(message)) is transient
    # as psycopg words a failed connection
    text = f'connection failed: connection to server at "127.0.0.1", port 5432 failed: ' \
           f"FATAL:  {message}"
    assert pg_transient(psycopg.OperationalError(text)) is transient


# -- PostgreSQL SQLSTATEs ----------------------------------------------------------------------

SQLSTATE_CASES: list[tuple[type[psycopg.Error], str, bool]] = [
    (psycopg.errors.ObjectInUse, "55006", True),  # template1 being accessed (CREATE DATABASE)
    (psycopg.errors.LockNotAvailable, "55P03", True),
    (psycopg.errors.TooManyConnections, "53300", True),
    # as before
    (psycopg.errors.AdminShutdown, "57P01", True),
    (psycopg.errors.CannotConnectNow, "57P03", True),
    (psycopg.errors.SerializationFailure, "40001", True),
    (psycopg.errors.DeadlockDetected, "40P01", True),
    (psycopg.errors.ConnectionFailure, "08006", True),
    (psycopg.errors.InsufficientPrivilege, "42501", False),
    (psycopg.errors.DuplicateDatabase, "42P04", False),
    (psycopg.errors.ObjectNotInPrerequisiteState, "55000", False),
    (psycopg.errors.DependentObjectsStillExist, "2BP01", False),
    (psycopg.errors.QueryCanceled, "57014", False),
]


@pytest.mark.parametrize(("cls", "state", "transient"), SQLSTATE_CASES,
                         ids=[case[1] for case in SQLSTATE_CASES])
def test_postgres_sqlstates(cls: type[psycopg.Error], state: str, transient: bool) -> None:
    assert cls.sqlstate == state
    assert pg_transient(cls("some message")) is transient


# -- keeping the kind --------------------------------------------------------------------------


def test_cluster_error_and_rewrap_keep_the_kind() -> None:
    assert type(cluster_error("x", transient=True)) is TransientError
    assert type(cluster_error("x", transient=False)) is ClusterError
    assert type(rewrap(TransientError("x"), "y: x")) is TransientError
    assert type(rewrap(ClusterError("x"), "y: x")) is ClusterError
    assert rewrap(ClusterError("x"), "y: x").message == "y: x"
