"""The crash matrix for azure-blob (see tests/crash.py): `tether up` killed at every crash point of
provision, deploy, detach-then-deploy and remove, then started again, converges with nothing
orphaned on the real server and one application process serving."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import world_traversable_tmpdir
from tests.crash import CrashRun, Provider, record

pytestmark = pytest.mark.e2e


def test_crash_matrix_azure(azurite_url: Any) -> None:
    base = world_traversable_tmpdir("tether-crash-azure-")
    run = CrashRun(base, Provider("azure-blob", "azure-blob-media", region="eu-azure",
                                  cluster_args=["--url", azurite_url]))
    try:
        record("azure-blob", run.run())
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
