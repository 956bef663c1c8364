"""The crash matrix's RabbitMQ column (see tests/crash.py): the provider's own
4 points (the engine's deploy points are the postgres column's), beside its server's fixture."""

from __future__ import annotations

from typing import Any

import pytest

from tests.crash import Provider, run_matrix

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # restarts tether up 4 times: minutes on a loaded machine
def test_crash_matrix_rabbitmq(rabbit: Any) -> None:
    settings = [f"--setting={k}={v}" for k, v in rabbit.settings.items()]
    run_matrix(Provider("rabbitmq", "rabbitmq", cluster_args=["--url", rabbit.admin_url,
                                                              *settings]), full=False)
