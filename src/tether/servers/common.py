"""What the servers Tether runs share: the system accounts they run as (PostgreSQL and the search
servers refuse root) and reading a process's state from /proc, so a pid file is trusted only
when that pid is still the server (a recycled pid is never signalled)."""

from __future__ import annotations

import functools
import logging
import os
import pwd
import subprocess
from pathlib import Path

from tether.errors import ClusterError

log = logging.getLogger("tether.servers")


def is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def system_account(name: str, runs: str) -> pwd.struct_passwd:
    """The system user `name` that runs `runs` (e.g. "PostgreSQL") when Tether is root,
    created once (no home, no login shell)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.info("creating the system user %s to run %s (it refuses to run as root)", name, runs)
    proc = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False)
    try:  # a concurrent process may have created it meanwhile: that is fine
        return pwd.getpwnam(name)
    except KeyError:
        raise ClusterError(
            f"could not create the system user {name!r} that runs {runs} "
            f"(useradd: {proc.stderr.strip() or proc.returncode}); create it yourself with "
            f"`useradd --system --user-group --shell /usr/sbin/nologin {name}`") from None


def pid_alive(pid: int) -> bool:
    """A live process (a zombie is dead: containers often have no init that reaps orphans)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = raw.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The arguments of a process ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return []
