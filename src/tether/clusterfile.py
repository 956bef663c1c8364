"""Clusters declared in a file, registered (or updated) each time `tether up` starts.

The file is TOML, `DATA_DIR/clusters.toml` unless `--clusters FILE` or `TETHER_CLUSTERS_FILE`
names another:

    [[cluster]]
    name = "eu-postgres"            # unique; the entry updates the cluster of that name
    kind = "postgres"
    region = "eu-aws"
    url_env = "EU_POSTGRES_URL"     # read the admin URL from this variable (or: url = "...")
    private = false                 # optional

Every cluster is checked as `tether cluster add` checks it: a bad entry stops the start with a
message naming the entry and the fix.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.actions.clusters import add_cluster
from tether.actions.common import Context
from tether.errors import UserError

ALLOWED = {"name", "kind", "region", "url", "url_env", "private", "settings"}


@dataclass(frozen=True)
class ClusterEntry:
    name: str
    kind: str
    region: str
    url: str
    private: bool
    settings: dict[str, Any]


def parse(path: Path) -> list[ClusterEntry]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    entries = data.get("cluster", [])
    if not isinstance(entries, list):
        raise UserError(f"{path}: declare clusters as [[cluster]] tables")
    out: list[ClusterEntry] = []
    for n, raw in enumerate(entries, 1):
        where = f"{path}, cluster #{n}"
        unknown = set(raw) - ALLOWED
        if unknown:
            raise UserError(f"{where}: unknown keys {', '.join(sorted(unknown))} "
                            f"(allowed: {', '.join(sorted(ALLOWED))})")
        missing = [k for k in ("name", "kind", "region") if not raw.get(k)]
        if missing:
            raise UserError(f"{where}: {', '.join(missing)} missing")
        url = raw.get("url")
        if raw.get("url_env"):
            url = os.environ.get(str(raw["url_env"]))
            if not url:
                raise UserError(f"{where} ({raw['name']}): the variable {raw['url_env']} is "
                                "not set: export it with the cluster's admin URL")
        if not url:
            raise UserError(f"{where} ({raw['name']}): give `url` or `url_env`")
        out.append(ClusterEntry(str(raw["name"]), str(raw["kind"]), str(raw["region"]),
                                str(url), bool(raw.get("private", False)),
                                dict(raw.get("settings", {}))))
    return out


def register(ctx: Context, path: Path) -> list[str]:
    """Register every cluster of the file; return their names."""
    names = []
    for entry in parse(path):
        try:
            add_cluster(ctx, entry.kind, entry.region, entry.url, private=entry.private,
                        name=entry.name, settings=entry.settings, upsert=True)
        except UserError as exc:
            raise UserError(f"{path}, cluster {entry.name}: {exc.message}") from None
        names.append(entry.name)
    return names
