"""Which provider handles which cluster kind. A new engine registers its provider here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tether.errors import UserError
from tether.providers.azure_blob import AzureBlobProvider
from tether.providers.base import PrivateServers, Provider
from tether.providers.local_files import LocalFilesProvider
from tether.providers.mysql import MySQLProvider, PrivateMariaDBServers
from tether.providers.postgres import PostgresProvider, PrivatePostgresServers
from tether.providers.rabbitmq import RabbitMQProvider
from tether.providers.s3 import S3Provider

_FACTORIES: dict[str, Callable[[], Provider]] = {
    "postgres": PostgresProvider,
    "local-files": LocalFilesProvider,
    "azure-blob": AzureBlobProvider,
    "s3": S3Provider,
    "rabbitmq": RabbitMQProvider,
    "mysql": MySQLProvider,
}

#: kinds for which Tether can run a dedicated server itself (`--private` with no free private
#: cluster registered); each factory takes the directory the servers live in
_PRIVATE: dict[str, Callable[[Path], PrivateServers]] = {
    "postgres": PrivatePostgresServers,
    "mysql": PrivateMariaDBServers,
}

SUPPORTED_KINDS: tuple[str, ...] = tuple(_FACTORIES)
SPAWNABLE_KINDS: frozenset[str] = frozenset(_PRIVATE)


def get_provider(kind: str) -> Provider:
    """The provider for a cluster kind; a `UserError` naming the supported kinds otherwise."""
    factory = _FACTORIES.get(kind)
    if factory is None:
        raise UserError(f"unknown or unsupported cluster kind {kind!r}: supported kinds are "
                        f"{', '.join(SUPPORTED_KINDS)}")
    return factory()


def private_servers(kind: str, base_dir: Path) -> PrivateServers:
    """The manager of the dedicated servers of a kind, kept under `base_dir`."""
    factory = _PRIVATE.get(kind)
    if factory is None:
        raise UserError(f"Tether cannot run private {kind} servers itself: register a private "
                        f"cluster with `tether cluster add {kind} ... --private`")
    return factory(base_dir)
