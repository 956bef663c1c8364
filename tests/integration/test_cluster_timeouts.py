"""Connect and read timeouts on every cluster kind (issue 8): registering a cluster at an address
that accepts connections but never answers (another service, a hung server, a firewall that
swallows the traffic) fails within seconds, with a message that says it timed out, where, and
what to check, and never the password. Before, RabbitMQ and S3 waited 60 s, Azure Blob 90 s;
MySQL (10 s, fixed before) and PostgreSQL (5 s, but a message that did not say it timed out)
are kept here too."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.actions import clusters
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.store.db import Store

pytestmark = pytest.mark.integration

#: no kind may take longer than this to give up on a silent address
BOUND = 20.0
#: the admin password (valid base64, so it also passes as an Azure account key)
PASSWORD = "U2lsZW50UHdBNGFmMTk5"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    yield Context(store=store, box=SecretBox.from_data_dir(tmp_path), data_dir=tmp_path,
                  actor="test")
    store.dispose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts (the listen backlog) and nobody
    ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield silent.getsockname()[1]


#: kind -> (region, cluster URL for port {port}, settings)
CASES = {
    "postgres": ("local", "postgres://admin:{pw}@127.0.0.1:{port}/postgres", {}),
    "mysql": ("local", "mysql://admin:{pw}@127.0.0.1:{port}/", {}),
    "rabbitmq": ("local", "http://admin:{pw}@127.0.0.1:{port}/", {}),
    "s3": ("eu-aws", "s3://ADMINKEY:{pw}@127.0.0.1:{port}/", {"endpoint_scheme": "http"}),
    "azure-blob": ("eu-azure",
                   "azure+http://devstoreaccount1:{pw}@127.0.0.1:{port}/devstoreaccount1", {}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_cluster_that_never_answers_fails_in_seconds_saying_it_timed_out(
        ctx: Context, silent_port: int, kind: str) -> None:
    region, url, settings = CASES[kind]
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        clusters.add_cluster(ctx, kind, region, url.format(pw=PASSWORD, port=silent_port),
                             settings=settings)
    waited = time.monotonic() - started
    message = err.value.message
    assert waited < BOUND, f"{kind}: gave up after {waited:.1f} s"
    assert "timed out" in message, message
    assert f"127.0.0.1:{silent_port}" in message, message
    assert "check that" in message.lower(), message
    assert PASSWORD not in message
    assert clusters.list_clusters(ctx) == []
