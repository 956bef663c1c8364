"""Crash resume of search instances through `tether up` (issue 9): a real `tether up` kills
itself with SIGKILL at each crash point of provision and of removal of an `elasticsearch`
instance (`TETHER_CRASH_AT`, see `tether.faults` and tests/crash.py) on the session's OpenSearch 2
server, is started again, and the instance converges:

- provisioned: `pending attachment`, and its `{P}_ELASTICSEARCH_DSN` logs in and indexes a
  document under its prefix (the credentials made before the crash are the ones recorded after
  it);
- removed: `removed`, and nothing of it is left on the server: no user, role, role mapping, nor
  any index of its prefix (the document indexed after provision included).

One data dir and one chain of five starts (tests/crash.py's `run_provider_points`: each restart
armed at the next point), with no application and no deploy (the deploy points are the engine's,
the same for every kind, and tests/crash.py covers them): about half a minute. Real servers, no
mocks.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import world_traversable_tmpdir
from tests.crash import PROVIDER_POINTS, CrashRun, Provider
from tests.search import SearchNode
from tether import lifecycle, naming
from tether.faults import ENV as CRASH_ENV
from tether.lifecycle import State
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.registry import get_provider
from tether.store.models import Instance

pytestmark = pytest.mark.e2e

SECURITY = "/_plugins/_security/api"


class SearchCrashRun(CrashRun):
    """tests/crash.py's run of the provider's points, with the search instance's own checks:
    after each restart (`check_resources`) and while `tether up` is down (`crashed`)."""

    def __init__(self, base: Path, node: SearchNode) -> None:
        super().__init__(base, Provider("elasticsearch", "opensearch-2",
                                        cluster_args=["--url", node.admin_url]))
        self.node = node
        self.two: str | None = None  # TWO's resource base, once it is made

    def instances(self) -> list[tuple[str, str, State]]:
        """(prefix, resource base, state) of every instance in the store."""
        store, _ = self._store()
        try:
            with store.session() as s:
                return [(i.prefix, naming.resource_names(i.id).base, State(i.state))
                        for i in s.scalars(select(Instance))]
        finally:
            store.dispose()

    def base_of(self, prefix: str) -> str:
        """The resource base of the live instance `prefix`."""
        return next(b for p, b, st in self.instances() if p == prefix and st is not State.REMOVED)

    def leftovers(self, base: str) -> list[str]:
        """What of the instance `base` is on the server (as its admin sees it)."""
        left = [f"{kind}/{base}" for kind in ("internalusers", "roles", "rolesmapping")
                if self.node.request("GET", f"{SECURITY}/{kind}/{base}").status_code != 404]
        found = self.node.request("GET", f"/_resolve/index/{base}*",
                                  params={"expand_wildcards": "all"})
        assert found.status_code == 200, found.text
        left += [i["name"] for i in found.json()["indices"]
                 if i["name"] == base or i["name"].startswith(base + "-")]
        return left

    def logs_in(self, prefix: str, base: str) -> None:
        """The instance's DSN, as the application gets it, logs in and indexes a document under
        its prefix."""
        dsn = self.tether.ok("project", "env-vars", "-p", self.project, "-e", "test", "--all",
                             "--get", f"{prefix}_ELASTICSEARCH_DSN").out.strip()
        parts = urlsplit(dsn)
        assert parts.path.strip("/") == base, dsn.replace(parts.password or "", "***")
        url = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        assert httpx.get(url + "/", auth=auth, timeout=30).status_code == 200
        made = httpx.put(f"{url}/{base}-crash/_doc/1", params={"refresh": "true"},
                         json={"prefix": prefix}, auth=auth, timeout=30)
        assert made.status_code in (200, 201), made.text
        count = httpx.get(f"{url}/{base}-crash/_count", auth=auth, timeout=30)
        assert count.status_code == 200 and count.json()["count"] == 1, count.text

    def check_resources(self) -> None:
        super().check_resources()  # states are the lifecycle's; observe agrees with them
        for prefix, base, state in self.instances():
            if state in lifecycle.FUNCTIONAL:
                self.logs_in(prefix, base)
            elif state is State.REMOVED:
                assert self.leftovers(base) == [], (prefix, state)

    def crashed(self, timeout: float = 120) -> None:
        """Besides waiting for the crash: what it left on the server while `tether up` is
        down, before the restart converges it."""
        point = self.tether.env[CRASH_ENV]
        super().crashed(timeout)
        if point == "remove.before_provider":  # the removal has not begun
            one = self.base_of("ONE")
            assert f"{one}-crash" in self.leftovers(one)
        elif point == "provision.after_provider":  # made, its credentials not recorded
            self.two = self.base_of("TWO")
            assert f"internalusers/{self.two}" in self.leftovers(self.two)
        elif point == "remove.after_provider":  # deleted, the removal not recorded
            assert self.two is not None and self.leftovers(self.two) == []

    def clean_up(self) -> None:
        """Besides tests/crash.py's clean-up: whatever a failed run left on the shared server."""
        super().clean_up()
        bases: list[str] = []
        with contextlib.suppress(Exception):  # no store yet: nothing was made
            bases = [base for _, base, _ in self.instances()]
        spec = ClusterSpec(id=0, kind="elasticsearch", region="local", url=self.node.admin_url)
        for base in bases:
            with contextlib.suppress(Exception):
                get_provider("elasticsearch").deprovision(spec, ResourceNames(base=base))


@pytest.mark.timeout(600)  # five starts of tether up: about half a minute, more when loaded
def test_search_instances_converge_after_crashes(opensearch_server: SearchNode) -> None:
    base = world_traversable_tmpdir("tether-crash-search-")
    run = SearchCrashRun(base, opensearch_server)
    try:
        cells = run.run_provider_points()
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
    assert {p: cells.get(p, "not reached") for p in PROVIDER_POINTS} == {
        "provision.before_provider": "converged: pending attachment",
        "provision.after_provider": "converged: pending attachment",
        "remove.before_provider": "converged: removed, nothing left",
        "remove.after_provider": "converged: removed, nothing left",
    }
