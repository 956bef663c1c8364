"""Checks for servers Tether runs under a system user of their own (PostgreSQL and MariaDB refuse
to run as root): can that user reach the directory it will live in?"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


def first_untraversable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first existing ancestor of `path` that `account` cannot search, if any."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            break
        if st.st_uid == account.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return parent
    return None
