"""Accessibility checked by a machine: axe-core (npm, pinned and installed into build/axe/ by
scripts/servers/axe.sh) run inside a page of the Services view; any serious or critical
violation fails the test, each listed with the elements it was found on and how to fix it."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import ROOT

AXE = ROOT / "build" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
#: what fails a page; minor and moderate findings are reported by axe but not enforced
#: (TETHER_AXE_IMPACTS=minor,moderate,serious,critical shows them all, failing on them)
BLOCKING = tuple(os.environ.get("TETHER_AXE_IMPACTS", "serious,critical").split(","))


@functools.cache
def _source(path: Path = AXE) -> str:
    if not path.exists():
        pytest.fail(f"axe-core is not installed ({path}): run scripts/servers/axe.sh")
    return path.read_text()


def violations(page: Page) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now (WCAG 2.x A and AA rules and axe's best
    practices). The page's Content-Security-Policy allows no injected script tag, so axe is
    evaluated through the browser's debugging protocol, which the policy does not govern."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_source())
    return list(page.evaluate("""async () => {
        const result = await window.axe.run(document, { resultTypes: ['violations'] });
        return result.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map((n) => ({ target: n.target.join(' '), html: n.html.slice(0, 160),
                                         summary: n.failureSummary })),
        }));
    }"""))


def describe(found: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for v in found:
        lines.append(f"- {v['impact']} {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:8]:
            lines.append(f"    {node['target']}: {node['html']}")
            lines.extend(f"      {line}" for line in (node["summary"] or "").splitlines())
    return "\n".join(lines)


def assert_accessible(page: Page, where: str) -> None:
    """Fail, listing them, when axe finds any serious or critical violation on the page."""
    blocking = [v for v in violations(page) if v["impact"] in BLOCKING]
    assert not blocking, (f"axe-core: {' or '.join(BLOCKING)} violations on {where}:\n"
                          + describe(blocking))
