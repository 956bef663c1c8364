"""Which provider handles which cluster kind: found, not listed.

Every module of this package but the shared plumbing (`base`, `common`, `registry`) is the
provider of one kind, named after it (`local_files` for `local-files`), and holds its class as
`PROVIDER`. A module is imported when its kind is first used, so a missing client library (e.g.
`azure-storage-blob`) disables that one kind, with a message saying what to install, instead of
stopping Tether. Adding a kind is adding a module; nothing here changes.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import tether.providers
from tether.errors import UserError
from tether.providers.base import PrivateServers, Provider, ProviderBase

#: modules of the package that are not providers
_PLUMBING = frozenset({"base", "common", "registry"})


def _module_name(kind: str) -> str:
    return kind.replace("-", "_")


@functools.cache
def kinds() -> tuple[str, ...]:
    """Every kind this installation has a provider module for, sorted (whether or not its
    client library is installed: see `available`)."""
    found = [info.name.replace("_", "-") for info in pkgutil.iter_modules(tether.providers.__path__)
             if not info.name.startswith("_") and info.name not in _PLUMBING]
    return tuple(sorted(found))


class KindDisabled(UserError):
    """A kind whose provider cannot be imported here (its client library is missing)."""


@functools.cache
def provider_class(kind: str) -> type[ProviderBase]:
    """The provider class of a kind; a `UserError` naming the supported kinds for an unknown
    one, a `KindDisabled` saying what to install when its module cannot be imported."""
    if kind not in kinds():
        raise UserError(f"unknown or unsupported cluster kind {kind!r}: supported kinds are "
                        f"{', '.join(kinds())}")
    module_name = f"tether.providers.{_module_name(kind)}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise KindDisabled(
            f"{kind} clusters are disabled here: the provider needs the Python package "
            f"{missing!r}, which is not installed (install Tether with its dependencies: "
            f"`pip install tether` or scripts/install.sh)") from None
    cls: Any = getattr(module, "PROVIDER", None)
    if not (isinstance(cls, type) and issubclass(cls, ProviderBase)) or cls.kind != kind:
        raise TypeError(f"{module_name}.PROVIDER must be the ProviderBase subclass of kind "
                        f"{kind!r}")
    return cls


def available() -> dict[str, str | None]:
    """Each kind, with why it is disabled (None when it works here)."""
    out: dict[str, str | None] = {}
    for kind in kinds():
        try:
            provider_class(kind)
            out[kind] = None
        except KindDisabled as exc:
            out[kind] = exc.message
    return out


def get_provider(kind: str) -> Provider:
    """The provider for a cluster kind; a `UserError` naming the supported kinds otherwise."""
    provider: Provider = provider_class(kind)()  # type: ignore[assignment]
    return provider


def spawnable(kind: str) -> bool:
    """Whether Tether can run a dedicated server of this kind itself (`--private` with no free
    private cluster registered)."""
    try:
        return provider_class(kind).private_servers is not None
    except UserError:
        return False


def load(where: str) -> Any:
    """The object a declaration names as "module:attribute", imported on first use."""
    module_name, _, attribute = where.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def backup_storage_kinds() -> list[str]:
    """The kinds whose clusters can keep backup files, the preferred first."""
    found = []
    for kind in kinds():
        try:
            cls = provider_class(kind)
        except UserError:
            continue
        if cls.backup_storage is not None:
            found.append((cls.backup_storage_rank, kind))
    return [kind for _, kind in sorted(found)]


def private_servers(kind: str, base_dir: Path) -> PrivateServers:
    """The manager of the dedicated servers of a kind, kept under `base_dir`."""
    where = provider_class(kind).private_servers
    if where is None:
        raise UserError(f"Tether cannot run private {kind} servers itself: register a private "
                        f"cluster with `tether cluster add {kind} ... --private`")
    module_name, _, attribute = where.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    servers: PrivateServers = factory(base_dir)
    return servers
