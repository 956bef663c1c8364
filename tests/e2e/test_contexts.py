"""Two control planes on one machine share one CLI config (issue 8, finding 3): the second
`tether up` used to overwrite the first one's settings, and its token was lost. Now each adds its
own context and `tether context use` (or TETHER_CONTEXT) picks which one the CLI talks to."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Tether, new_tether


@pytest.fixture()
def two_planes() -> Iterator[tuple[Tether, Tether]]:
    """Two `tether up`s with their own data dirs and ports but one XDG_CONFIG_HOME, started at
    the same time (both write the config at once)."""
    first, second = new_tether("tether-ctx-a-"), new_tether("tether-ctx-b-")
    second.config_home = first.config_home
    second.env["XDG_CONFIG_HOME"] = str(first.config_home)
    errors: list[BaseException] = []

    def start(t: Tether) -> None:
        try:
            t.start()
        except BaseException as exc:  # reported below, after both were given their chance
            errors.append(exc)

    try:
        threads = [threading.Thread(target=start, args=(t,)) for t in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield first, second
    finally:
        for t in (first, second):
            t.stop()
            subprocess.run(["rm", "-rf", str(t.data_dir.parent)], check=False)


def _name(t: Tether) -> str:
    return f"127.0.0.1:{t.port}"


def test_two_ups_keep_both_contexts_and_use_reaches_each(
        two_planes: tuple[Tether, Tether]) -> None:
    first, second = two_planes
    config = json.loads((first.config_home / "tether" / "config.json").read_text())
    assert {n: c["url"] for n, c in config["contexts"].items()} == {
        _name(first): first.url, _name(second): second.url}
    assert config["current"] in (_name(first), _name(second))

    listed = first.ok("context", "list", "--json").json()
    assert sorted((c["name"], c["url"]) for c in listed) == sorted(
        [(_name(first), first.url), (_name(second), second.url)])
    assert [c["current"] for c in listed].count(True) == 1
    assert "tth_" not in first.ok("context", "list").out

    for t in (first, second, first):
        first.ok("context", "use", _name(t))
        status = first.ok("status", "--json").json()
        assert status["url"] == t.url  # reached with the token that up wrote for it
        assert status["actor"]

    other = Tether(first.data_dir, first.config_home, first.port,
                   env={**first.env, "TETHER_CONTEXT": _name(second)})
    assert other.ok("status", "--json").json()["url"] == second.url  # for one command only
    assert first.ok("status", "--json").json()["url"] == first.url

    unknown = first.cli("context", "use", "nowhere:1")
    assert unknown.code == 2
    assert _name(first) in unknown.err and _name(second) in unknown.err
