"""POSIX ACL entries for one group, written as the kernel's extended attributes (no `setfacl`
needed): `system.posix_acl_access` on a file or directory, `system.posix_acl_default` for what a
directory's new entries inherit.

Only named-group entries are added, changed or read here; every other entry is kept as found.
Like `setfacl -m`, a change recalculates the mask as the union of the group-class entries, so an
entry never grants less than it says — and, as POSIX ACLs work, a process in a named group is
checked against its group entries and never falls back to the "other" bits: an entry of `---`
denies that group even what everybody else may do.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"

_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")

READ, WRITE, EXECUTE = 4, 2, 1


class AclUnsupported(OSError):
    """The file system does not support POSIX ACLs (or they are turned off for it)."""


Entries = dict[tuple[int, int], int]  # (tag, id) -> permission bits


def _decode(data: bytes) -> Entries:
    (version,) = struct.unpack_from("<I", data)
    if version != _VERSION:
        raise OSError(errno.EINVAL, f"unknown ACL version {version}")
    entries: Entries = {}
    for offset in range(4, len(data), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(data, offset)
        entries[(tag, ident)] = perm
    return entries


def _encode(entries: Entries) -> bytes:
    return struct.pack("<I", _VERSION) + b"".join(
        _ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(entries.items()))


def _from_mode(mode: int) -> Entries:
    """The minimal ACL a file's mode bits stand for."""
    return {(_USER_OBJ, _UNDEFINED): (mode >> 6) & 7, (_GROUP_OBJ, _UNDEFINED): (mode >> 3) & 7,
            (_OTHER, _UNDEFINED): mode & 7}


def _read(path: Path, name: str, mode: int) -> Entries | None:
    try:
        return _decode(os.getxattr(path, name, follow_symlinks=False))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return _from_mode(mode) if name == ACCESS else None
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise AclUnsupported(exc.errno, f"POSIX ACLs are not supported on {path}") from exc
        raise


def _mask(entries: Entries) -> int:
    """The mask `setfacl` computes: the union of the group-class entries."""
    mask = 0
    for (tag, _ident), bits in entries.items():
        if tag in (_USER, _GROUP_OBJ, _GROUP):
            mask |= bits
    return mask


def group_permissions(path: Path, gid: int) -> int | None:
    """The bits of `gid`'s named entry in the access ACL of `path`, None when it has none."""
    st = os.lstat(path)
    entries = _read(path, ACCESS, st.st_mode)
    assert entries is not None
    return entries.get((_GROUP, gid))


def set_group(path: Path, gid: int, perms: int, default: bool = False) -> bool:
    """Give group `gid` exactly `perms` on `path` (and, with `default`, on what a directory's
    new entries inherit). Returns whether anything changed. Symlinks are never followed."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return False
    names = [ACCESS] + ([DEFAULT] if default and stat.S_ISDIR(st.st_mode) else [])
    changed = False
    for name in names:
        entries = _read(path, name, st.st_mode)
        if entries is None:  # no default ACL yet: it starts from the directory's mode
            entries = _from_mode(st.st_mode)
        if entries.get((_GROUP, gid)) == perms and (_MASK, _UNDEFINED) in entries and \
                entries[(_MASK, _UNDEFINED)] & perms == perms:
            continue
        entries[(_GROUP, gid)] = perms
        entries[(_MASK, _UNDEFINED)] = _mask(entries)
        try:
            os.setxattr(path, name, _encode(entries), follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise AclUnsupported(exc.errno,
                                     f"POSIX ACLs are not supported on {path}") from exc
            raise
        changed = True
    return changed


def remove_group(path: Path, gid: int) -> bool:
    """Take group `gid`'s named entry out of the access ACL of `path`, like `setfacl -x`; with no
    named entry left, the ACL is the mode bits again. Returns whether anything changed.
    Symlinks are never followed."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return False
    entries = _read(path, ACCESS, st.st_mode)
    if entries is None or (_GROUP, gid) not in entries:
        return False
    del entries[(_GROUP, gid)]
    if any(tag in (_USER, _GROUP) for tag, _ident in entries):
        entries[(_MASK, _UNDEFINED)] = _mask(entries)
    else:  # the minimal ACL: the kernel keeps it as the mode bits alone
        entries.pop((_MASK, _UNDEFINED), None)
    os.setxattr(path, ACCESS, _encode(entries), follow_symlinks=False)
    return True
