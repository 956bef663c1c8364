"""The application's output: per-release log files, written by a small log writer that owns the
app, and read back by position (`tether logs ENV [--follow]`).

Why a writer process rather than a reader thread in Tether: an app whose stdout is a pipe to Tether
loses it when Tether dies (its next write fails with EPIPE or kills it), so an app adopted after a
crash could no longer log, or would die of logging. Instead each release runs as

    log writer (python -m tether.runtime.logs, its own session: the release's process group)
      └─ the app: its argv (or /bin/sh -c APP_COMMAND when the command asks for a shell), as
         the environment's own user when Tether is root (stdout and stderr: a pipe to the writer)

The writer reads the app's output line by line, masks the release's secrets (`tether.redact`, as
the deployment log does), and appends each line, with its UTC time, to the release's log file
through `logging.handlers.RotatingFileHandler` (size-rotated: `release-7.log`, `.log.1` …). It is
the only writer of the file, so rotation is a plain rename and loses nothing, and it drains the
pipe whether or not anyone reads the file and whether or not Tether runs. It ignores SIGTERM (the
app gets it with the whole group), keeps reading until the app's output ends, then exits with the
app's own status (re-raising the app's signal), so Tether sees the app's exit as before.
Files are mode 0600 in 0700 directories: the output may hold anything the app prints. The writer
runs as Tether's user, so the files stay Tether's: the app, running as a user of its own, can
neither open its own log file nor another release's.

Tether reads the files back by *position* (inode and byte offset), so a reader that follows the
output keeps its place across rotations (a rotated file keeps its inode), and knows when lines it
had not read yet were rotated away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import select
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from tether.errors import OperationError
from tether.redact import redact, secret_forms

#: size at which a release's log file is rotated, and how many rotated files are kept
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
#: a longer line (no newline in sight) is cut into pieces of this size
MAX_LINE = 16 * 1024
#: at most this much is read back in one call (a follower catches up over several calls)
READ_LIMIT = 1024 * 1024
#: after the app exited, the writer keeps reading what is left this long at most (a background
#: child that inherited the pipe may keep it open forever)
DRAIN_AFTER_EXIT = 2.0
DRAIN_IDLE = 0.2

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def release_log_path(data_dir: Path, environment_key: str, release_id: int) -> Path:
    """`DATA_DIR/logs/<project>/<env>/release-<id>.log` for `environment_key` "project/env"."""
    parts = [_SAFE.sub("_", p) or "_" for p in environment_key.split("/")]
    return data_dir.joinpath("logs", *parts, f"release-{release_id}.log")


def release_log_file(data_dir: Path, environment_key: str, release_id: int) -> Path:
    """`release_log_path`, with its directories made private (0700) down from DATA_DIR/logs."""
    path = release_log_path(data_dir, environment_key, release_id)
    prepare_log_dir(path.parent, top=data_dir / "logs")
    return path


def prepare_log_dir(directory: Path, top: Path | None = None) -> None:
    """Make `directory` (and its parents up to `top`, when `top` is one of them) private to
    Tether: 0700."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    chain = [directory]
    if top is not None and directory.is_relative_to(top):
        chain += [p for p in directory.parents if p.is_relative_to(top)]
    for path in chain:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)


# -- reading back ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """A place in a release's log files: a byte offset in one file. The file is known by its
    inode and a checksum of its first line (a file's first line never changes; an inode may be
    reused at once by the next file once a rotation deleted the oldest)."""

    inode: int
    head: int
    offset: int

    def __post_init__(self) -> None:
        if self.inode < 0 or self.head < 0 or self.offset < 0:
            raise ValueError(f"a log position is never negative: {self.token()}")

    def token(self) -> str:
        return f"{self.inode}.{self.head}.{self.offset}"

    @classmethod
    def parse(cls, token: str) -> Position | None:
        """The position of a `token()`; None for `0.0.0` (no file yet: from the beginning).
        Raises ValueError for anything else that `token()` cannot have made (not three whole
        numbers, or a negative one): a bad cursor, refused as such by its callers."""
        parts = token.split(".")
        if len(parts) != 3 or not all(part.isdigit() and part.isascii() for part in parts):
            raise ValueError(f"not a log position: {token!r}")
        inode, head, offset = (int(part) for part in parts)
        return cls(inode, head, offset) if inode > 0 else None


@dataclass(frozen=True)
class LogLine:
    at: str | None  # ISO 8601, UTC, as the writer stamped it
    line: str

    def as_dict(self) -> dict[str, str | None]:
        return {"at": self.at, "line": self.line}


class LogUnreadable(OperationError, OSError):
    """The log files could not be read (an OSError of the system, or files rotating without
    pause): an error with a message (HTTP 500 with it, exit 1), still an OSError for callers
    that ignore unreadable logs."""


@dataclass
class Chunk:
    lines: list[LogLine]
    #: where the next read starts (None: no file yet, read from the beginning)
    position: Position | None
    #: lines between the asked position and these ones were rotated away unread
    missed: bool = False


def log_files(path: Path) -> list[Path]:
    """The files of one release's log, oldest first: `x.log.N` … `x.log.1`, `x.log`."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + [path]


def _head(f: IO[bytes]) -> int:
    """A checksum of a file's first complete line (0 while it has none)."""
    f.seek(0)
    first = f.read(4096)
    end = first.find(b"\n")
    return zlib.crc32(first[: end + 1]) if end >= 0 else 0


@dataclass
class _File:
    inode: int
    head: int
    f: IO[bytes]


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[list[_File]]:
    """The log's files opened at once, oldest first: once open, a rotation cannot change what is
    read. Retried when a rotation renamed files while they were opened."""
    for _attempt in range(5):
        files: list[_File] = []
        try:
            names = log_files(path)
            for name in names:
                try:
                    f = open(name, "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    continue
                files.append(_File(os.fstat(f.fileno()).st_ino, _head(f), f))
            if _still_named(names, files):
                yield files
                return
        finally:
            for opened in files:
                opened.f.close()
    raise OSError(f"the log {path} kept rotating while it was read")


def _still_named(names: list[Path], files: list[_File]) -> bool:
    now = []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            now.append(os.stat(name).st_ino)
    return now == [opened.inode for opened in files]


def _parse(raw: bytes) -> LogLine:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    at, sep, rest = text.partition(" ")
    if sep and len(at) >= 20 and at[:4].isdigit() and "T" in at:
        return LogLine(at, rest)
    return LogLine(None, text)


def _complete(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines in `data` and how many bytes they span (a last line still being
    written is left for the next read)."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0
    return data[:end].split(b"\n"), end + 1


def end_position(path: Path) -> Position | None:
    """The current end of the log (where the output written from now on starts)."""
    try:
        with open(path, "rb") as f:
            return Position(os.fstat(f.fileno()).st_ino, _head(f), os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        return None


def _position(opened: _File, offset: int) -> Position:
    head = opened.head if offset > 0 else 0
    if head == 0 and offset > 0:
        head = _head(opened.f)
    return Position(opened.inode, head, offset)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An OSError while the log is read becomes a `LogUnreadable` naming the file."""
    try:
        yield
    except LogUnreadable:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LogUnreadable(f"the log {path} could not be read: {reason}") from exc


def read_after(path: Path, position: Position | None, limit: int = 1000,
               max_bytes: int = READ_LIMIT) -> Chunk:
    """Up to `limit` complete lines written after `position` (None: from the beginning).
    Raises `LogUnreadable` when the files cannot be read."""
    with _reading(path):
        return _read_after(path, position, limit, max_bytes)


def _read_after(path: Path, position: Position | None, limit: int, max_bytes: int) -> Chunk:
    lines: list[LogLine] = []
    with _opened(path) as files:
        if not files:
            return Chunk([], position)
        start, offset, missed = 0, 0, False
        if position is not None:
            found = [i for i, opened in enumerate(files) if opened.inode == position.inode
                     and (position.offset == 0 or opened.head == position.head)]
            if found:
                start, offset = found[0], position.offset
            else:
                missed = True  # that file was rotated away: resume at the oldest one kept
        result = _position(files[start], offset)
        budget = max_bytes
        for i in range(start, len(files)):
            opened = files[i]
            f = opened.f
            rotated = i < len(files) - 1  # no longer written to
            if i > start:
                offset = 0
            size = os.fstat(f.fileno()).st_size
            if offset > size:  # the file was cut short: read it again from its start
                offset, missed = 0, True
            f.seek(offset)
            data = f.read(min(size - offset, budget))
            if rotated and data and offset + len(data) == size and not data.endswith(b"\n"):
                data += b"\n"  # a rotated file's last line, cut short: still a line
            complete, used = _complete(data)
            for raw in complete[: limit - len(lines)]:
                lines.append(_parse(raw))
                offset = min(offset + len(raw) + 1, size)
            result = _position(opened, offset)
            budget -= used
            if len(lines) >= limit or budget <= 0 or offset < size:
                break
        return Chunk(lines, result, missed)


def read_tail(path: Path, count: int) -> Chunk:
    """The last `count` complete lines of the log, and the position after them. Raises
    `LogUnreadable` when the files cannot be read."""
    with _reading(path):
        return _read_tail(path, count)


def _read_tail(path: Path, count: int) -> Chunk:
    with _opened(path) as files:
        if not files:
            return Chunk([], None)
        newest = files[-1].f
        end = _end_of_complete(newest)
        collected: list[bytes] = []
        for index in range(len(files) - 1, -1, -1):
            need = count - len(collected)
            if need <= 0:
                break
            f = files[index].f
            stop = end if index == len(files) - 1 else os.fstat(f.fileno()).st_size
            collected = _last_lines(f, need, stop) + collected
        return Chunk([_parse(raw) for raw in collected], _position(files[-1], end))


def _end_of_complete(f: IO[bytes], block: int = 65536) -> int:
    """The offset just after the last complete line of a file."""
    pos = os.fstat(f.fileno()).st_size
    while pos > 0:
        step = min(block, pos)
        f.seek(pos - step)
        data = f.read(step)
        index = data.rfind(b"\n")
        if index >= 0:
            return pos - step + index + 1
        pos -= step
    return 0


def _last_lines(f: IO[bytes], count: int, end: int, block: int = 65536) -> list[bytes]:
    """The last `count` lines of a file's first `end` bytes, read backwards block by block."""
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= count:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    if not data:
        return []
    if not data.endswith(b"\n"):
        data += b"\n"  # a rotated file's last line, cut short: still a line
    lines = data.split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]  # the first one may be cut
    return lines[-count:]


def tail_text(path: Path, count: int) -> list[str]:
    """The last lines, without their times (for messages)."""
    try:
        return [entry.line for entry in read_tail(path, count).lines]
    except OSError:
        return []


# -- the writer (runs in its own process) ----------------------------------------------------------


def _report(stream: IO[bytes], message: str) -> None:
    with contextlib.suppress(OSError):  # Tether may be gone: the app must go on regardless
        stream.write(message.encode("utf-8", errors="replace") + b"\n")
        stream.flush()


def _open_handler(path: Path, max_bytes: int,
                  backups: int) -> logging.handlers.RotatingFileHandler:
    previous = os.umask(0o077)
    try:
        prepare_log_dir(path.parent)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    return handler


def _emit(handler: logging.Handler, raw: bytes, secrets: list[str]) -> None:
    text = redact(raw.decode("utf-8", errors="replace").rstrip("\r"), secrets)
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = logging.LogRecord("app", logging.INFO, "", 0, f"{stamp} {text}", None, None)
    handler.handle(record)


def _cut(data: bytes, needles: list[bytes], limit: int = MAX_LINE) -> int:
    """Where to cut `data`, longer than `limit`, into a piece and the rest: at `limit`, or
    before it, at the start of a secret the cut would split (the halves would not be masked:
    each line is masked on its own)."""
    cut = limit
    moved = True
    while moved:
        moved = False
        for needle in needles:
            # any occurrence inside this window straddles the cut
            start = data.find(needle, max(0, cut - len(needle) + 1), cut + len(needle) - 1)
            if start < 0:
                continue
            if start == 0:  # a secret longer than a piece: the piece takes it whole
                return len(needle)
            cut, moved = start, True
    return cut


def _pump(fd: int, app: subprocess.Popen[bytes], handler: logging.Handler,
          secrets: list[str]) -> None:
    """Copy the app's output to the log until it ends (or the app exited and nothing more comes
    soon: a background child may hold the pipe open). A line longer than `MAX_LINE` is cut into
    pieces, never inside a secret."""
    needles = [form.encode("utf-8") for form in secret_forms(secrets)]
    margin = max((len(needle) for needle in needles), default=0)
    buffer = b""
    exited_at: float | None = None
    while True:
        if exited_at is None and app.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > DRAIN_AFTER_EXIT:
            break
        ready, _, _ = select.select([fd], [], [], DRAIN_IDLE if exited_at else 0.5)
        if not ready:
            if exited_at is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            while len(raw) > MAX_LINE:
                cut = _cut(raw, needles)
                _emit(handler, raw[:cut], secrets)
                raw = raw[cut:]
            _emit(handler, raw, secrets)
        # a line still coming: cut only once any secret the cut could split is there whole
        while len(buffer) > MAX_LINE + margin:
            cut = _cut(buffer, needles)
            _emit(handler, buffer[:cut], secrets)
            buffer = buffer[cut:]
    if buffer:
        _emit(handler, buffer, secrets)


def _ignore(_signum: int, _frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN it is not inherited by the app (exec resets
    caught signals to their default)."""


def _start_error(exc: OSError, argv: list[str], cwd: str | None, user: str | None) -> str:
    """Why the app could not be started, with what to do about it."""
    where = f" in {cwd}" if cwd else ""
    who = f" as the user {user}" if user else ""
    program = argv[0] if argv else "?"
    if cwd and exc.filename == cwd:
        hint = f"its directory cannot be entered ({exc.strerror})"
    elif isinstance(exc, FileNotFoundError):
        hint = ("the program was not found: name it by an absolute path or one on PATH "
                "(a file of the app directory: ./NAME)")
    elif isinstance(exc, PermissionError):
        hint = ("permission denied: the program and the directories above it must be "
                f"executable{who} (see README, \"What an application needs\")")
    else:
        hint = exc.strerror or str(exc)
    return f"could not start the app ({program}){who}{where}: {hint}"


def writer_main() -> int:
    """`python -m tether.runtime.logs`: read the release's settings (JSON) from stdin, start the
    app, report `started PID` (or `error MESSAGE`) on stdout, then copy the app's output to the
    log file until it ends, and exit as the app did."""
    logging.raiseExceptions = False  # a full disk must not stop the draining
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    report = sys.stdout.buffer
    # No settings (Tether closed stdin without sending them: the start was called off) or bad
    # ones: no app is started.
    try:
        config = json.loads(sys.stdin.buffer.read())
        path = Path(config["log_path"])
        max_bytes, backups = int(config["max_bytes"]), int(config["backups"])
        command, env, cwd = config["command"], config["env"], config.get("cwd")
        argv = config.get("argv") or ["/bin/sh", "-c", command]
        secrets = [str(v) for v in config.get("secrets") or ()]
        if not (isinstance(command, str) and isinstance(env, dict)
                and isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise TypeError("command must be a string, argv a list of strings, env an object")
        user, group = config.get("user"), config.get("group")
        groups = config.get("groups")
        user_name = config.get("user_name")
        if user is not None and not (isinstance(user, int) and isinstance(group, int)
                                     and isinstance(groups, list)):
            raise TypeError("user and group must be numbers, groups a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _report(report, f"error the log writer got no valid settings ({type(exc).__name__}): "
                        "the app was not started")
        return 2
    try:
        handler = _open_handler(path, max_bytes, backups)
    except OSError as exc:
        _report(report, f"error could not open the log file {path}: {exc.strerror}")
        return 1
    switch = {} if user is None else {"user": user, "group": group, "extra_groups": groups}
    try:
        app = subprocess.Popen(
            argv, cwd=cwd, env=env, **switch,  # type: ignore[arg-type]
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        _report(report, "error " + _start_error(exc, argv, cwd, user_name))
        return 1
    os.umask(0o077)  # rotated files are made private too
    _report(report, f"started {app.pid}")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nothing left to say to Tether, which may be gone anyway
        os.dup2(devnull, fd)
    os.close(devnull)
    assert app.stdout is not None
    try:
        _pump(app.stdout.fileno(), app, handler, secrets)
    finally:
        handler.close()
    code = app.wait()
    if code < 0:  # die of the app's signal, so Tether sees what the app saw
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(writer_main())
