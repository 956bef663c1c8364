"""The CLI config holds one context per control plane (issue 8, finding 3): `tether up` adds or
updates its own and never discards another's, even when several write at once; the format before
contexts still reads; `tether context list|use|remove` and the environment pick one."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli.main import app
from tether.config import (
    ClientSettings,
    ConfigError,
    config_path,
    context_name,
    edit_cli_config,
    load_client_settings,
    read_cli_config,
    save_client_settings,
)
from tether.server import _ensure_cli_settings
from tether.store.db import Store

A = "http://127.0.0.1:8070"
B = "http://127.0.0.1:8071"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config directory of its own, and none of the caller's TETHER_* settings."""
    for name in list(os.environ):
        if name.startswith("TETHER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    s.migrate()
    yield s
    s.dispose()


def _file() -> dict[str, object]:
    return dict(json.loads(config_path().read_text()))


def _old_format(url: str, token: str) -> None:
    config_path().parent.mkdir(parents=True)
    config_path().write_text(json.dumps({"url": url, "token": token}))


def test_context_names_are_host_and_port() -> None:
    assert context_name("http://127.0.0.1:8070") == "127.0.0.1:8070"
    assert context_name("https://tether.example.com/") == "tether.example.com"
    assert context_name("http://[::1]:8070") == "[::1]:8070"


def test_the_format_before_contexts_reads_and_is_migrated_on_the_next_write() -> None:
    _old_format(A + "/", "tth_old")
    assert load_client_settings() == ClientSettings(A, "tth_old")
    config = read_cli_config()
    assert config.current == "127.0.0.1:8070"
    assert config.contexts == {"127.0.0.1:8070": ClientSettings(A, "tth_old")}

    save_client_settings(ClientSettings(B, "tth_b"))
    assert _file() == {"current": "127.0.0.1:8071", "contexts": {
        "127.0.0.1:8070": {"url": A, "token": "tth_old"},
        "127.0.0.1:8071": {"url": B, "token": "tth_b"}}}


def test_two_ups_keep_both_contexts_and_the_last_is_current(store: Store, tmp_path: Path) -> None:
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    try:
        assert _ensure_cli_settings(store, A) == config_path()
        first = read_cli_config().contexts["127.0.0.1:8070"]
        assert _ensure_cli_settings(other, B) == config_path()
        config = read_cli_config()
        assert config.current == "127.0.0.1:8071"
        assert config.contexts["127.0.0.1:8070"] == first  # untouched: its token still works
        assert set(config.contexts) == {"127.0.0.1:8070", "127.0.0.1:8071"}
        assert stat.S_IMODE(config_path().stat().st_mode) == 0o600
    finally:
        other.dispose()


def test_up_again_keeps_a_valid_token_and_only_makes_its_context_current(store: Store) -> None:
    _ensure_cli_settings(store, A)
    token = read_cli_config().contexts["127.0.0.1:8070"].token
    save_client_settings(ClientSettings(B, "tth_b"))
    before = config_path().stat().st_mtime_ns

    assert _ensure_cli_settings(store, A) == config_path()  # `current` changed
    config = read_cli_config()
    assert config.current == "127.0.0.1:8070"
    assert config.contexts["127.0.0.1:8070"].token == token
    assert config.contexts["127.0.0.1:8071"] == ClientSettings(B, "tth_b")

    assert _ensure_cli_settings(store, A) is None  # nothing to change: not even written
    assert config_path().stat().st_mtime_ns >= before


def test_up_replaces_a_token_its_store_does_not_know_and_migrates_the_old_format(
        store: Store) -> None:
    _old_format(A, "tth_from_another_data_dir")
    _ensure_cli_settings(store, A)
    config = read_cli_config()
    assert config.current == "127.0.0.1:8070"
    assert config.contexts["127.0.0.1:8070"].token != "tth_from_another_data_dir"
    assert "contexts" in _file()


def test_a_context_renamed_by_hand_is_updated_not_duplicated(store: Store) -> None:
    save_client_settings(ClientSettings(A, "tth_stale"), name="laptop")
    _ensure_cli_settings(store, A)
    config = read_cli_config()
    assert list(config.contexts) == ["laptop"] and config.current == "laptop"
    assert config.contexts["laptop"].token != "tth_stale"


def _add_contexts(config_home: str, worker: int, count: int) -> None:
    os.environ["XDG_CONFIG_HOME"] = config_home
    for n in range(count):
        save_client_settings(ClientSettings(f"http://10.0.{worker}.{n}:8070", f"tth_{worker}_{n}"))


def test_writers_at_once_in_processes_and_threads_lose_no_context(config_home: Path) -> None:
    workers, count = 4, 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_contexts, args=(str(config_home), w, count))
             for w in range(workers)]
    threads = [threading.Thread(target=_add_contexts, args=(str(config_home), w, count))
               for w in range(workers, 2 * workers)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for t in threads:
        t.join(120)
    contexts = read_cli_config().contexts
    assert len(contexts) == 2 * workers * count
    assert all(contexts[f"10.0.{w}.{n}:8070"].token == f"tth_{w}_{n}"
               for w in range(2 * workers) for n in range(count))
    assert [p.name for p in config_home.joinpath("tether").iterdir()
            if p.name.endswith(".tmp")] == []


def test_an_unreadable_config_is_refused_when_read_and_kept_aside_when_written() -> None:
    config_path().parent.mkdir(parents=True)
    config_path().write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_client_settings()
    save_client_settings(ClientSettings(A, "tth_a"))
    assert config_path().with_name("config.json.invalid").read_text() == "{not json"
    assert load_client_settings() == ClientSettings(A, "tth_a")


def test_environment_picks_or_overrides_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    save_client_settings(ClientSettings(A, "tth_a"))
    save_client_settings(ClientSettings(B, "tth_b"))
    assert load_client_settings() == ClientSettings(B, "tth_b")

    monkeypatch.setenv("TETHER_CONTEXT", "127.0.0.1:8070")
    assert load_client_settings() == ClientSettings(A, "tth_a")
    monkeypatch.setenv("TETHER_TOKEN", "tth_env")
    assert load_client_settings() == ClientSettings(A, "tth_env")
    monkeypatch.setenv("TETHER_URL", "http://elsewhere:1")
    assert load_client_settings() == ClientSettings("http://elsewhere:1", "tth_env")

    monkeypatch.delenv("TETHER_TOKEN")
    with pytest.raises(ConfigError, match="set TETHER_TOKEN too"):  # no token sent elsewhere
        load_client_settings()
    monkeypatch.setenv("TETHER_URL", A + "/")
    assert load_client_settings() == ClientSettings(A, "tth_a")

    monkeypatch.delenv("TETHER_URL")
    monkeypatch.setenv("TETHER_CONTEXT", "nope")
    with pytest.raises(ConfigError, match=r"no context 'nope'.*:8070, 127\.0\.0\.1:8071"):
        load_client_settings()


def test_cli_lists_uses_and_removes_contexts_without_showing_tokens() -> None:
    runner = CliRunner()
    save_client_settings(ClientSettings(A, "tth_secret_a"))
    save_client_settings(ClientSettings(B, "tth_secret_b"))

    listed = runner.invoke(app, ["context", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == [
        {"name": "127.0.0.1:8070", "url": A, "current": False},
        {"name": "127.0.0.1:8071", "url": B, "current": True}]
    table = runner.invoke(app, ["context", "list"])
    assert table.exit_code == 0 and "127.0.0.1:8070" in table.stdout
    assert "tth_secret" not in listed.output + table.output

    used = runner.invoke(app, ["context", "use", "127.0.0.1:8070"])
    assert used.exit_code == 0, used.output
    assert read_cli_config().current == "127.0.0.1:8070"
    assert load_client_settings() == ClientSettings(A, "tth_secret_a")

    unknown = runner.invoke(app, ["context", "use", "nope", "--json"])
    assert unknown.exit_code == 2
    message = json.loads(unknown.stdout)["error"]["message"]
    assert "127.0.0.1:8070" in message and "127.0.0.1:8071" in message
    assert read_cli_config().current == "127.0.0.1:8070"

    removed = runner.invoke(app, ["context", "remove", "127.0.0.1:8070"])
    assert removed.exit_code == 0, removed.output
    config = read_cli_config()
    assert list(config.contexts) == ["127.0.0.1:8071"] and config.current is None
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 2
    assert "tether context use" in json.loads(status.stdout)["error"]["message"]
    assert runner.invoke(app, ["context", "remove", "nope"]).exit_code == 2


def test_an_edit_that_fails_writes_nothing() -> None:
    save_client_settings(ClientSettings(A, "tth_a"))
    with pytest.raises(RuntimeError), edit_cli_config() as config:
        config.contexts.clear()
        raise RuntimeError("e.g. the store failed while making a token")
    assert set(read_cli_config().contexts) == {"127.0.0.1:8070"}
