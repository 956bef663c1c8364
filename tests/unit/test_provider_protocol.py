"""Every registered kind honours the provider protocol: one module per kind, whose class declares
everything about it, and nothing else in Tether keeps a table of kinds (issue 9)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tether
from tether.errors import UserError
from tether.providers import base
from tether.providers.base import ClusterSettings, PrivateServers, Provider, ProviderBase
from tether.providers.registry import (
    available,
    get_provider,
    kinds,
    private_servers,
    provider_class,
    spawnable,
)

SRC = Path(tether.__file__).parent
KINDS = kinds()
FAMILIES = ("local", "s3", "azure")
#: the variable names of shared/SPEC.md, as regular expressions of the prefix's place
SPEC_NAME = re.compile(r"\{P\}_[A-Z][A-Z0-9_]*")


def _protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def test_the_kinds_are_found_in_the_package() -> None:
    assert set(KINDS) >= {"postgres", "mysql", "rabbitmq", "s3", "azure-blob", "local-files"}
    assert available() == dict.fromkeys(KINDS)  # every client library is installed here


@pytest.mark.parametrize("kind", KINDS)
def test_kind_declares_everything_about_itself(kind: str) -> None:
    cls = provider_class(kind)
    assert issubclass(cls, ProviderBase) and cls.kind == kind
    assert cls.__module__ == f"tether.providers.{kind.replace('-', '_')}"
    provider = get_provider(kind)
    assert isinstance(provider, Provider)
    # every method of the protocol, with the protocol's parameters
    for name, signature in _protocol_methods(Provider).items():
        method = getattr(provider, name)
        wanted = [p for p in signature.parameters if p != "self"]
        got = list(inspect.signature(method).parameters)
        assert got[:len(wanted)] == wanted, f"{kind}.{name}{inspect.signature(method)}"
    assert re.fullmatch(r"[a-z][a-z0-9-]*", cls.service)
    name = provider.service_name("16.4")
    assert name.startswith(cls.service if cls.versioned else name)
    assert name == (f"{cls.service}-16" if cls.versioned else cls.service) or kind not in (
        "postgres", "mysql", "rabbitmq", "s3", "azure-blob", "local-files")
    assert cls.family is None or cls.family in FAMILIES
    assert cls.title
    # variables: SPEC-style templates; the DEFAULT aliases name one of them
    assert cls.variables and all(SPEC_NAME.fullmatch(t) for t in cls.variables)
    assert set(cls.default_aliases.values()) <= set(cls.variables)
    assert provider.var_names("MEDIA") == [t.replace("{P}", "MEDIA") for t in cls.variables]
    assert set(provider.var_names("DEFAULT")) == {
        *(t.replace("{P}", "DEFAULT") for t in cls.variables), *cls.default_aliases}
    # settings: a typed model that refuses what it does not know
    assert issubclass(cls.settings_model, ClusterSettings)
    with pytest.raises(ValueError, match="not a setting of"):
        cls.check_settings({"no_such_setting": "1"})
    assert set(cls.limits) <= set(cls.settings_model.model_fields)
    # private servers: declared where Tether runs them, honouring that protocol too
    assert spawnable(kind) == (cls.private_servers is not None)


@pytest.mark.parametrize("kind", [k for k in KINDS if spawnable(k)])
def test_private_servers_honour_their_protocol(kind: str, tmp_path: Path) -> None:
    servers = private_servers(kind, tmp_path)
    assert servers.kind == kind
    for name, signature in _protocol_methods(PrivateServers).items():
        wanted = [p for p in signature.parameters if p != "self"]
        got = list(inspect.signature(getattr(servers, name)).parameters)
        assert got[:len(wanted)] == wanted, f"{kind} servers.{name}"


def test_a_kind_without_private_servers_says_how_to_get_one(tmp_path: Path) -> None:
    kind = next(k for k in KINDS if not spawnable(k))
    with pytest.raises(UserError, match="register a private cluster"):
        private_servers(kind, tmp_path)


def test_an_unknown_kind_names_the_supported_ones() -> None:
    with pytest.raises(UserError, match=r"supported kinds are .*postgres"):
        provider_class("redis")


def test_no_module_keeps_a_table_of_kinds() -> None:
    """Outside a kind's own provider module, no code names a kind to decide something about
    it: the catalog, the variables, the registry, the actions, the backups (which engine, which
    clusters keep backup files) and the Divio API (a kind's service type) read the
    declarations. A module that implements kinds may name them: the providers, the servers,
    and the media backup engine (one archive format for the three media kinds)."""
    names = "|".join(map(re.escape, KINDS))
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](""" + names + r""")["']""")
    table = re.compile(r"""^\s*["'](""" + names + r""")["']\s*:""", re.M)
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("providers/", "servers/", "store/migrations/")) or \
                rel == "backups/media.py":
            continue
        text = path.read_text()
        offenders += [f"{rel}: {m.group(0).strip()}" for m in pattern.finditer(text)]
        offenders += [f"{rel}: {m.group(0).strip()}" for m in table.finditer(text)]
    assert offenders == []


def test_a_missing_client_library_disables_one_kind_only() -> None:
    """Without boto3 the s3 kind says what to install; every other kind still works, and the
    catalog simply does not offer s3."""
    script = textwrap.dedent("""
        import sys
        sys.modules["boto3"] = None  # an import of boto3 now fails as if it were not installed
        from tether.catalog import ClusterInfo, offers
        from tether.errors import UserError
        from tether.providers.registry import available, get_provider
        state = available()
        assert state["s3"] is not None and "boto3" in state["s3"], state
        assert all(v is None for k, v in state.items() if k != "s3"), state
        try:
            get_provider("s3")
        except UserError as exc:
            print("S3:", exc.message)
        get_provider("postgres")
        clusters = [ClusterInfo(1, "a", "s3", "eu", "1", False, None),
                    ClusterInfo(2, "b", "postgres", "eu", "18.1", False, None)]
        print("OFFERS:", [o.service for o in offers(clusters, "eu")])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "S3: s3 clusters are disabled here" in out and "'boto3'" in out
    assert "OFFERS: ['postgres-18']" in out


def test_base_has_no_kind_names() -> None:
    """The protocol module stays generic."""
    text = Path(base.__file__).read_text()
    assert 'kind = "' not in text


def test_backups_read_the_declarations() -> None:
    """Which engine backs a kind's instances up, and which clusters keep backup files (in which
    order), come from the provider classes."""
    from tether.backups.engines import engine_for, supported_kinds
    from tether.providers.registry import backup_storage_kinds

    assert backup_storage_kinds() == ["s3", "azure-blob", "local-files"]
    assert set(supported_kinds()) == set(KINDS)
    for kind in KINDS:
        declared = provider_class(kind).backup_engine
        assert declared is not None
        assert type(engine_for(kind)).__name__ == declared.rsplit(":", 1)[1]
