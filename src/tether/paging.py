"""Cursor-based paging of lists (issue 12: "no paging on any list").

A list is read in pages of `limit` rows ordered by a unique key (a project's name, an instance's
or a deployment's id); the cursor of the next page is the last key of this one, so a page costs
one indexed range scan however deep it is, and rows added or removed meanwhile never make a page
repeat or skip another's rows (an offset would). Cursors are opaque to clients (base64url of the
key as JSON) and are checked on the way in: a cursor that does not decode is a 400.

The REST API answers a page as the same JSON array as before and names the next page in a `Link:
<…>; rel="next"` header (RFC 8288), so clients that read one page work as they did; the CLI's
`--all` and the Services view follow the links.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from tether.errors import UserError

T = TypeVar("T")

#: the most rows one page may hold
MAX_LIMIT = 1000


@dataclass(frozen=True)
class PageArgs:
    """Which page: at most `limit` rows (None: all) after the cursor `after` (None: from the
    start)."""

    limit: int | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise UserError(f"limit must be between 1 and {MAX_LIMIT}")


#: every row, in one page
ALL = PageArgs()


class Page(list[T]):
    """The rows of one page — a list, so callers that want every row use it as one — and the
    cursor of the next page (`after`; None when this is the last)."""

    def __init__(self, rows: Iterable[T] = (), after: str | None = None) -> None:
        super().__init__(rows)
        self.after = after


def encode(key: int | str) -> str:
    return base64.urlsafe_b64encode(json.dumps([key]).encode()).decode().rstrip("=")


def decode(cursor: str) -> int | str:
    """The key of a cursor made by `encode`; anything else is a UserError (a 400)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeError):
        value = None
    if not (isinstance(value, list) and len(value) == 1
            and isinstance(value[0], int | str) and not isinstance(value[0], bool)):
        raise UserError(f"invalid cursor {cursor[:80]!r}: pass the `after` of a previous "
                        "page's next link, or leave it out")
    return value[0]


def keyset(s: Session, query: Select[Any], key: InstrumentedAttribute[Any], page: PageArgs,
           descending: bool = False) -> tuple[list[Any], str | None]:
    """The rows of `query` for `page`, ordered by the unique `key` (newest first when
    `descending`), and the cursor of the next page (None: there is none)."""
    if page.after is not None:
        after = decode(page.after)
        if not isinstance(after, key.type.python_type) or (
                isinstance(after, int) and not 0 <= after < 2**31):
            raise UserError(f"invalid cursor {page.after[:80]!r}: it is not one of this list")
        query = query.where(key < after if descending else key > after)
    query = query.order_by(key.desc() if descending else key)
    if page.limit is None:
        return list(s.scalars(query)), None
    rows = list(s.scalars(query.limit(page.limit + 1)))
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[:page.limit]
    return rows, encode(getattr(rows[-1], key.key))
