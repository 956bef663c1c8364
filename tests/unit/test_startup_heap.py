"""tether up freezes what its start made (issue 12's scale benchmark): full garbage collections
walked ~170,000 objects that live as long as the process, ~100 ms each, the projects list's p99."""

from __future__ import annotations

import gc

from tether.server import freeze_startup_heap


def test_a_full_collection_no_longer_walks_the_startup_objects() -> None:
    held = [[n] for n in range(50_000)]  # long-lived objects, as the app's are
    gc.collect()
    before = len(gc.get_objects())
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(held)
        assert len(gc.get_objects()) < before - len(held)  # what a collection walks
    finally:
        gc.unfreeze()
