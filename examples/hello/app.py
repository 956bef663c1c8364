"""Tether's example application: shows which backing services it received and whether each one
really works, so a deploy can be checked by eye (`/`) or by a script (`/status.json`).

Standard library only; `psycopg` is used when installed to log in to Postgres databases.
Never prints a password: DSNs are shown with their password masked.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:  # optional: without it Postgres is only checked for reachability
    import psycopg
except ImportError:  # pragma: no cover - depends on the app's environment
    psycopg = None  # type: ignore[assignment]

SUFFIXES = ("_DATABASE_DSN", "_STORAGE_DSN", "_ELASTICSEARCH_DSN", "_AMQP_BROKER_URL")
DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "amqp": 5672,
    "https": 443,
    "http": 80,
    "s3": 443,
    "az": 443,
}


def mask(dsn: str) -> str:
    """The DSN with its password replaced by ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def scrub(message: str, dsn: str) -> str:
    """A short error message, with the DSN's password removed should a library echo it."""
    first = (message.strip().splitlines() or ["unknown error"])[0].strip()
    password = urlsplit(dsn).password
    for secret in {password, unquote(password)} if password else set():
        first = first.replace(secret, "***")
    return first[:300]


def service_variables() -> list[str]:
    names = [n for n in os.environ if n.endswith(SUFFIXES)]
    if "DATABASE_URL" in os.environ:
        names.append("DATABASE_URL")
    return sorted(names)


def check_tcp(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 443)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        return {"ok": False, "detail": f"failed: {host}:{port} unreachable ({exc.strerror or exc})"}
    return {"ok": True, "detail": f"reachable at {host}:{port} (not logged in by this example)"}


def check_postgres(dsn: str) -> dict[str, Any]:
    if psycopg is None:
        result = check_tcp(dsn)
        result["detail"] += "; install psycopg to log in"
        return result
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
    except Exception as exc:
        return {"ok": False, "detail": f"failed: {scrub(str(exc), dsn)}", "tables": []}
    tables = [r[0] for r in rows]
    return {"ok": True, "detail": f"connected, PostgreSQL {version}", "tables": tables}


def check_files(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    directory = unquote(parts.path)
    public = parse_qs(parts.query).get("url", [""])[0]
    if not os.path.isdir(directory):
        return {"ok": False, "detail": f"failed: directory {directory} does not exist"}
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".hello-check-"):
            pass
    except OSError as exc:
        return {"ok": False, "detail": f"failed: {directory} is not writable ({exc.strerror})"}
    return {"ok": True, "detail": f"writable directory {directory}, public url {public or '?'}"}


def check_search(dsn: str) -> dict[str, Any]:
    """Log in to Elasticsearch/OpenSearch with the DSN's user and count the documents of the
    index its path names (the instance's index prefix); a missing index is fine."""
    parts = urlsplit(dsn)
    index = parts.path.strip("/")
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 9200}"
    auth = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
                            .encode()).decode()
    request = urllib.request.Request(f"{base}/{index}/_count",  # noqa: S310 (http(s) only)
                                     headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (http(s) only)
            count = json.loads(answer.read()).get("count", 0)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # logged in, no index yet
            return {"ok": True, "detail": f"logged in, index {index} not made yet"}
        return {"ok": False, "detail": f"failed: HTTP {exc.code} on {index}"}
    except (OSError, ValueError) as exc:
        return {"ok": False, "detail": f"failed: {scrub(str(exc), dsn)}"}
    return {"ok": True, "detail": f"logged in, index {index} holds {count} document(s)"}


def check(dsn: str, name: str = "") -> dict[str, Any]:
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgres", "postgresql"):
        return check_postgres(dsn)
    if scheme == "file":
        return check_files(dsn)
    if name.endswith("_ELASTICSEARCH_DSN") and scheme in ("http", "https"):
        return check_search(dsn)
    return check_tcp(dsn)


def status() -> dict[str, Any]:
    services = {}
    for name in service_variables():
        result = check(os.environ[name], name)
        result.setdefault("tables", [])
        result["dsn"] = mask(os.environ[name])
        services[name] = result
    return {"stage": os.environ.get("STAGE", ""), "services": services}


def page(data: dict[str, Any]) -> str:
    items = []
    for name, svc in data["services"].items():
        tables = f" (tables: {', '.join(svc['tables'])})" if svc["tables"] else ""
        items.append(
            f"<li class={'ok' if svc['ok'] else 'failed'}><b>{html.escape(name)}</b>: "
            f"{html.escape(svc['detail'] + tables)}<br><code>{html.escape(svc['dsn'])}</code></li>"
        )
    listed = "\n".join(items) or "<li>no backing services attached yet</li>"
    return (
        "<!doctype html><meta charset=utf-8><title>hello from Tether</title>"
        "<style>.ok{color:green}.failed{color:firebrick}</style>"
        f"<h1>hello from Tether</h1><p>stage: <b>{html.escape(data['stage'] or '?')}</b></p>"
        f"<ul>\n{listed}\n</ul>\n"
    )


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.reply(200, "text/plain; charset=utf-8", "ok\n")
        elif path == "/status.json":
            self.reply(200, "application/json", json.dumps(status(), indent=2) + "\n")
        elif path == "/":
            self.reply(200, "text/html; charset=utf-8", page(status()))
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found\n")

    def reply(self, code: int, content_type: str, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: health checks would otherwise flood the deploy log."""


def main() -> None:
    required = [n.strip() for n in os.environ.get("REQUIRED_VARIABLES", "").split(",") if n.strip()]
    missing = [n for n in required if n not in os.environ]
    if missing:
        print(f"hello app: missing required variables: {', '.join(missing)}", file=sys.stderr)
        sys.exit(1)
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"hello app listening on {port}, stage {os.environ.get('STAGE', '?')}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
