"""The crash matrix's Azure Blob column (see tests/crash.py), beside its server's fixture."""

from __future__ import annotations

import pytest

from tests.crash import Provider, run_matrix

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # restarts tether up 8 times: minutes on a loaded machine
def test_crash_matrix_azure(azurite_url: str) -> None:
    run_matrix(Provider("azure-blob", "azure-blob-media", region="eu-azure",
                        cluster_args=["--url", azurite_url]))
