"""Where Tether keeps things, and how the CLI finds the control plane.

Server side: the data dir (`--data-dir`, else `TETHER_DATA_DIR`, else /var/lib/tether for root and
~/.local/share/tether otherwise) holds the embedded store, the secret key, the embedded clusters and
the media files. `TETHER_DATABASE_URL` points the store at PostgreSQL instead of SQLite.

Client side: `tether up` writes the URL and an admin token to `$XDG_CONFIG_HOME/tether/config.json`
(mode 0600); `TETHER_URL` and `TETHER_TOKEN` override it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8070


def default_data_dir() -> Path:
    env = os.environ.get("TETHER_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/tether")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tether"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "config.json"


@dataclass(frozen=True)
class ClientSettings:
    url: str
    token: str


def load_client_settings() -> ClientSettings | None:
    """The CLI's connection settings: environment first, then the config file."""
    url = os.environ.get("TETHER_URL")
    token = os.environ.get("TETHER_TOKEN")
    if not (url and token):
        path = config_path()
        if path.exists():
            data = json.loads(path.read_text())
            url = url or data.get("url")
            token = token or data.get("token")
    if url and token:
        return ClientSettings(url=url.rstrip("/"), token=token)
    return None


def save_client_settings(settings: ClientSettings) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": settings.url, "token": settings.token}, f)
    os.replace(tmp, path)
    return path
