"""Resource names unique to one test, for the provider tests' `make_names`-style fixtures: each
call of the maker gives `tether_t<unique id><suffix>`, and whatever the names name is removed when
the test ends (the last made first)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tether.providers.base import ResourceNames


@contextmanager
def unique_names(unique_id: str, remove: Callable[[ResourceNames], object]
                 ) -> Iterator[Callable[[str], ResourceNames]]:
    """A maker of names `tether_t{unique_id}{suffix}`; on leaving, `remove` (e.g. the provider's
    `deprovision` on the test's cluster) is called for each, the last made first."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in reversed(made):
        remove(names)
