"""Where Tether keeps things, and how the CLI finds the control plane.

Server side: the data dir (`--data-dir`, else `TETHER_DATA_DIR`, else /var/lib/tether for root and
~/.local/share/tether otherwise) holds the embedded store, the secret key, the embedded clusters and
the media files. `TETHER_DATABASE_URL` points the store at PostgreSQL instead of SQLite.

Client side: the CLI config, `$XDG_CONFIG_HOME/tether/config.json` (mode 0600), holds named
contexts, one per control plane (like kubectl's), and the current one. `tether up` adds or updates
its own context (named after its host:port) with an admin token, makes it current and keeps every
other; `tether context list|use|remove` manage them. `TETHER_CONTEXT` picks a context for one
command; `TETHER_URL` and `TETHER_TOKEN` override the context's settings.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tether.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8070
#: the local media files are served on their own port (another origin than the API's, see
#: tether.media): by default the API's port + this (8071); `--media-port`/TETHER_MEDIA_PORT
#: choose another, TETHER_MEDIA_URL the public base URL (e.g. https://media.example.com/ in
#: front of it)
MEDIA_PORT_OFFSET = 1


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


class ConfigError(UserError):
    """The CLI config cannot be used as it is (unreadable, or names an unknown context)."""

    code = "bad_config"


#: seconds a writer of the CLI config waits for another one (e.g. a concurrent `tether up`)
LOCK_WAIT = 30.0


def context_name(url: str) -> str:
    """The name `tether up` gives the context of a control plane: its `host:port`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return (f"{host}:{port}" if port else host) or "default"


@dataclass
class CliConfig:
    """The CLI config: named contexts (one per control plane, like kubectl's) and the current one.

    On disk: `{"current": NAME, "contexts": {NAME: {"url": URL, "token": TOKEN}}}`. The format
    before contexts, `{"url": URL, "token": TOKEN}`, reads as one context named after its
    `host:port` (made current) and is rewritten in the new format on the next write.
    """

    current: str | None = None
    contexts: dict[str, ClientSettings] = field(default_factory=dict)
    #: where it was written by `edit_cli_config`, when anything changed
    written: Path | None = None

    @classmethod
    def parse(cls, data: object, path: Path) -> CliConfig:
        how = (f"fix or remove {path} (then run `tether up` again), or set TETHER_URL and "
               "TETHER_TOKEN")
        if not isinstance(data, dict):
            raise ConfigError(f"the CLI config {path} is not a JSON object: {how}")
        if "contexts" not in data:  # the format before contexts
            url, token = data.get("url"), data.get("token")
            if isinstance(url, str) and isinstance(token, str) and url and token:
                name = context_name(url)
                return cls(current=name, contexts={name: ClientSettings(url.rstrip("/"), token)})
            if not data:
                return cls()
            raise ConfigError(f"the CLI config {path} has neither contexts nor a url and a "
                              f"token: {how}")
        contexts, current = data.get("contexts"), data.get("current")
        if not isinstance(contexts, dict) or not (current is None or isinstance(current, str)):
            raise ConfigError(f"the CLI config {path} has a malformed `contexts` or `current`: "
                              f"{how}")
        config = cls(current=current)
        for name, entry in contexts.items():
            url = entry.get("url") if isinstance(entry, dict) else None
            token = entry.get("token") if isinstance(entry, dict) else None
            if not (isinstance(url, str) and isinstance(token, str) and url and token):
                raise ConfigError(f"context {name!r} of the CLI config {path} needs a url and a "
                                  f"token: {how}")
            config.contexts[name] = ClientSettings(url.rstrip("/"), token)
        return config

    def as_json(self) -> dict[str, Any]:
        return {"current": self.current,
                "contexts": {name: {"url": c.url, "token": c.token}
                             for name, c in self.contexts.items()}}

    def names(self) -> str:
        return ", ".join(sorted(self.contexts)) or "none yet: run `tether up`"

    def get(self, name: str) -> ClientSettings:
        """The context called `name`, or ConfigError naming the ones that exist."""
        try:
            return self.contexts[name]
        except KeyError:
            raise ConfigError(f"no context {name!r} in the CLI config; the contexts are: "
                              f"{self.names()}") from None

    def name_for(self, url: str) -> str:
        """The context a control plane at `url` owns: the one named after its host:port, else
        one with that very URL (e.g. renamed by hand), else a new one named after its host:port."""
        url = url.rstrip("/")
        name = context_name(url)
        if name in self.contexts:
            return name
        return next((n for n, c in self.contexts.items() if c.url == url), name)

    def selected(self, name: str | None = None) -> ClientSettings | None:
        """The context commands use: `name` (TETHER_CONTEXT) if given, else the current one;
        None without any context."""
        if name:
            return self.get(name)
        if self.current is not None and self.current in self.contexts:
            return self.contexts[self.current]
        if not self.contexts:
            return None
        raise ConfigError(f"no current context in the CLI config: pick one with `tether "
                          f"context use NAME` (or set TETHER_CONTEXT); the contexts are: "
                          f"{self.names()}")


def _read(path: Path) -> tuple[CliConfig, object]:
    """The config at `path` and the JSON it was read from (None when there is no file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return CliConfig(), None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"the CLI config {path} is not valid JSON: fix or remove it (then run "
                          "`tether up` again), or set TETHER_URL and TETHER_TOKEN") from None
    return CliConfig.parse(data, path), data


def read_cli_config() -> CliConfig:
    """The CLI config as it is now (no lock: writers replace the file atomically)."""
    return _read(config_path())[0]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `PATH.lock` (flock): one read-modify-write at a time, across
    processes. The lock file is never removed (removing it would let two writers lock two files)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"the CLI config is locked by another process for more "
                                      f"than {LOCK_WAIT:.0f} s ({lock}): try again when it has "
                                      "finished") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, config: CliConfig) -> None:
    """Replace the file atomically with a 0600 file (mkstemp) that is complete on disk."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config.as_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


@contextmanager
def edit_cli_config() -> Iterator[CliConfig]:
    """Read, change (in the `with` body) and write back the CLI config, under the lock, so
    concurrent writers (two `tether up`s) never lose each other's contexts. It is written only
    when something changed (an old-format file always is); `written` then says where.

    A file that cannot be read is kept aside as `config.json.invalid` (with a warning) and a
    new one is started: `tether up` must not fail because of the CLI's config."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(path):
        try:
            config, before = _read(path)
        except ConfigError as exc:
            aside = path.with_name(path.name + ".invalid")
            os.replace(path, aside)
            log.warning("%s; it was moved to %s and a new one is written", exc.message, aside)
            config, before = CliConfig(), None
        yield config
        if config.as_json() != before:
            _write(path, config)
            config.written = path


def load_client_settings() -> ClientSettings | None:
    """The CLI's connection settings: `TETHER_URL` and `TETHER_TOKEN` when both are set; else the
    context named by `TETHER_CONTEXT`, else the current one, with `TETHER_TOKEN` (if set) in
    place of its token. `TETHER_URL` alone borrows the token of a context with that URL only: a
    token is never sent to a control plane it was not made for. None when nothing is configured;
    ConfigError (exit 2) for an unusable config or an unknown context."""
    url = (os.environ.get("TETHER_URL") or "").rstrip("/")
    token = os.environ.get("TETHER_TOKEN")
    if url and token:
        return ClientSettings(url=url, token=token)
    config = read_cli_config()
    if url:
        match = next((c for c in config.contexts.values() if c.url == url), None)
        if match is None:
            raise ConfigError(f"TETHER_URL is {url} but no context of the CLI config has that "
                              "URL: set TETHER_TOKEN too (or unset TETHER_URL to use a context)")
        return match
    chosen = config.selected(os.environ.get("TETHER_CONTEXT") or None)
    if chosen is None:
        return None
    return ClientSettings(url=chosen.url, token=token or chosen.token)


def save_client_settings(settings: ClientSettings, name: str | None = None) -> Path:
    """Add or update the context `name` (default: named after the URL's host:port) and make it
    current; other contexts are kept."""
    with edit_cli_config() as config:
        name = name or config.name_for(settings.url)
        config.contexts[name] = ClientSettings(settings.url.rstrip("/"), settings.token)
        config.current = name
    return config_path()
