"""The crash matrix's Azure Blob column (see tests/crash.py): the provider's own
4 points (the engine's deploy points are the postgres column's), beside its server's fixture."""

from __future__ import annotations

import pytest

from tests.crash import Provider, run_matrix

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # restarts tether up 4 times: minutes on a loaded machine
def test_crash_matrix_azure(azurite_url: str) -> None:
    run_matrix(Provider("azure-blob", "azure-blob-media", region="eu-azure",
                        cluster_args=["--url", azurite_url]), full=False)
