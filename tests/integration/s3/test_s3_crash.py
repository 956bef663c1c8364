"""The crash matrix for s3 (see tests/crash.py): `tether up` killed at every crash point of
provision, deploy, detach-then-deploy and remove, then started again, converges with nothing
orphaned on the real server and one application process serving."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import world_traversable_tmpdir
from tests.crash import CrashRun, Provider, record

pytestmark = pytest.mark.e2e


def test_crash_matrix_s3(s3_server: Any) -> None:
    base = world_traversable_tmpdir("tether-crash-s3-")
    run = CrashRun(base, Provider("s3", "s3-media", region="eu-aws",
                                  cluster_args=["--url", s3_server.url,
                                                "--setting", "endpoint_scheme=http"]))
    try:
        record("s3", run.run())
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
