"""The CLI's lists page (issue 12): `--limit N` shows N and says on stderr that there are more,
`--all` follows the API's `Link` headers to the end, JSON stays one array; an error about several
projects names a few, not all."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Tether

pytestmark = pytest.mark.e2e


def test_lists_take_limit_and_all(tether: Tether) -> None:
    t = tether
    names = [f"page{n:02d}" for n in range(12)]
    for name in names:
        t.ok("project", "create", name)

    two = t.ok("project", "list", "--limit", "2", "--json")
    assert [p["name"] for p in two.json()] == names[:2]
    assert "showing the first 2 projects: there are more (--limit N or --all)" in two.err
    every = t.ok("project", "list", "--all", "--json")
    assert [p["name"] for p in every.json()] == names  # in name order, all of them
    assert "there are more" not in every.err
    table = t.ok("project", "list", "--limit", "3")
    assert "page02" in table.out and "page03" not in table.out

    for n in range(3):
        t.ok("service", "add", "test", "local-media", "--prefix", f"M{n}", "-p", "page00")
    listed = t.ok("service", "list", "test", "-p", "page00", "--limit", "2", "--json").json()
    assert len(listed) == 2
    assert len(t.ok("service", "list", "test", "-p", "page00", "--all", "--json").json()) >= 3

    bad = t.cli("project", "list", "--limit", "0")
    assert bad.code == 2

    several = t.cli("service", "list", "test")  # no -p, and many projects
    assert several.code == 2
    assert "several projects exist (page00, page01" in several.err
    assert "page10" not in several.err and ", …)" in several.err
