"""TETHER_ENV_PORTS: the range environments' stable addresses take their ports from."""

from __future__ import annotations

import pytest

from tether.actions.projects import ENV_PORTS, env_ports
from tether.errors import UserError


def test_the_default_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_ENV_PORTS", raising=False)
    assert env_ports() == ENV_PORTS == range(8100, 9000)


@pytest.mark.parametrize(("raw", "ports"), [("9100-9199", range(9100, 9200)),
                                             (" 20000 - 20000 ", range(20000, 20001))])
def test_a_range_of_one_s_own(monkeypatch: pytest.MonkeyPatch, raw: str, ports: range) -> None:
    monkeypatch.setenv("TETHER_ENV_PORTS", raw)
    assert env_ports() == ports


@pytest.mark.parametrize("raw", ["9100", "9199-9100", "80-90", "9000-70000", "a-b", "-9000",
                                 "9000-"])
def test_a_bad_range_is_refused_with_how_to_write_it(monkeypatch: pytest.MonkeyPatch,
                                                     raw: str) -> None:
    monkeypatch.setenv("TETHER_ENV_PORTS", raw)
    with pytest.raises(UserError, match=r"FIRST-LAST, e\.g\. 8100-8999"):
        env_ports()
