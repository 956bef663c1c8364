"""Answers kept until the store changes.

A read that many clients repeat — who a token is, an environment's variables as
`tether project env-vars --all` and the Divio CLI ask for them, at every deploy of every app — is
answered from memory for as long as nothing has been written to the store since it was computed,
by this node or any other (`Store.data_version`). Any committed write anywhere empties it in
effect: there is no list of what depends on what to keep right, so nothing can be served stale
(a revoked token is refused by the very next call, as before). What changes with time alone
(a token's expiry) is checked by the caller on every hit.

An answer that depends on a few tables only may be validated by a version that changes only with
them, which the store's own triggers keep (`Store.auth_version`: tokens and browser sessions), so
that who a token is stays known across the writes of every other call.

An answer is kept only when the store's version was the same before and after computing it: a
write committed meanwhile may or may not be in it, so it is used once and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from tether.store.db import Store, Version

V = TypeVar("V")


class ReadCache(Generic[V]):
    """At most `size` answers by key, each with the store version it was computed at (least
    recently used dropped first). Thread-safe: `lookup` runs on the event loop, `compute` in
    worker threads."""

    def __init__(self, store: Store, size: int = 1024,
                 version: Callable[[], Version | None] | None = None) -> None:
        self.store = store
        self.size = size
        #: what validates the answers: `store.data_version` (any write), or a narrower one
        #: such as `store.auth_version` for answers that depend on a few tables only
        self.version = version or store.data_version
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Version, V]] = OrderedDict()
        #: answers served from memory and computed (for tests and benchmarks)
        self.hits = 0
        self.misses = 0

    def lookup(self, key: Hashable) -> tuple[V | None, Version | None]:
        """The kept answer of `key` if the store has not changed since (else None), and the
        store's version now, to pass to `keep` with an answer computed from here on."""
        version = self.version()
        if version is None:
            return None, None
        return self.peek(key, version), version

    def peek(self, key: Hashable, version: Version) -> V | None:
        """The kept answer of `key` if it was computed at `version` (a version just read)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        return None

    def keep(self, key: Hashable, since: Version | None, answer: V) -> None:
        """Keep `answer`, computed after `lookup` returned the version `since`, if nothing was
        written to the store meanwhile."""
        self.misses += 1
        if since is None or self.version() != since:
            return
        with self._lock:
            self._entries[key] = (since, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The answer of `key`: kept, or computed now (in this thread) and kept."""
        answer, version = self.lookup(key)
        if answer is not None:
            return answer
        answer = compute()
        self.keep(key, version, answer)
        return answer

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
