"""The crash matrix's mysql column (see tests/crash.py): the provider's own
4 points (the engine's deploy points are the postgres column's), beside its server's fixture."""

from __future__ import annotations

from typing import Any

import pytest

from tests.crash import Provider, run_matrix

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # restarts tether up 4 times: minutes on a loaded machine
def test_crash_matrix_mysql(mysql_server: Any) -> None:
    run_matrix(Provider("mysql", "mysql", cluster_args=["--url", mysql_server.admin_url]),
               full=False)
