"""Which provider handles which cluster kind. A new engine registers its provider here."""

from __future__ import annotations

from collections.abc import Callable

from tether.errors import UserError
from tether.providers.base import Provider
from tether.providers.local_files import LocalFilesProvider
from tether.providers.postgres import PostgresProvider

_FACTORIES: dict[str, Callable[[], Provider]] = {
    "postgres": PostgresProvider,
    "local-files": LocalFilesProvider,
}

SUPPORTED_KINDS: tuple[str, ...] = tuple(_FACTORIES)


def get_provider(kind: str) -> Provider:
    """The provider for a cluster kind; a `UserError` naming the supported kinds otherwise."""
    factory = _FACTORIES.get(kind)
    if factory is None:
        raise UserError(f"unknown or unsupported cluster kind {kind!r}: supported kinds are "
                        f"{', '.join(SUPPORTED_KINDS)}")
    return factory()
