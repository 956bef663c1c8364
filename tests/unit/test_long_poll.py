"""The one loop every long poll of the API runs (`tether.api.app.long_poll`: deployments `?wait`,
the app's logs, operations): answers at once when the first answer is ready or nothing is to be
waited for, as soon as a later one is, else the last one at the deadline; pauses with what is
left of the wait; asks again who is calling about once a second, and a refusal ends the wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from tether.api.app import long_poll
from tether.errors import Unauthorized


class Source:
    """Answers 0, 1, 2… one per fetch; counts the pauses and the rechecks."""

    def __init__(self) -> None:
        self.fetched = 0
        self.pauses: list[float] = []
        self.rechecks = 0

    async def fetch(self) -> int:
        self.fetched += 1
        return self.fetched - 1

    async def pause(self, left: float) -> None:
        self.pauses.append(left)
        await asyncio.sleep(min(left, 0.05))

    async def recheck(self) -> None:
        self.rechecks += 1


def test_ready_at_once_or_no_wait_is_one_fetch() -> None:
    src = Source()
    assert asyncio.run(long_poll(5, src.fetch, lambda n: True, recheck=src.recheck)) == 0
    assert asyncio.run(long_poll(0, src.fetch, lambda n: False, recheck=src.recheck)) == 1
    assert src.fetched == 2 and src.rechecks == 0


def test_answers_as_soon_as_an_answer_is_ready() -> None:
    src = Source()
    started = time.monotonic()
    got = asyncio.run(long_poll(10, src.fetch, lambda n: n == 3, pause=src.pause,
                                recheck=src.recheck))
    assert got == 3 and src.fetched == 4 and len(src.pauses) == 3
    assert all(0 < left <= 10 for left in src.pauses)
    assert src.pauses == sorted(src.pauses, reverse=True)  # what is left of the wait
    assert time.monotonic() - started < 2


def test_the_last_answer_at_the_deadline_and_a_recheck_a_second() -> None:
    src = Source()
    started = time.monotonic()
    got = asyncio.run(long_poll(1.3, src.fetch, lambda n: False, pause=src.pause,
                                recheck=src.recheck, recheck_every=0.5))
    took = time.monotonic() - started
    assert 1.3 <= took < 2.5
    assert got == src.fetched - 1  # the last fetch's answer
    assert 1 <= src.rechecks <= 3


def test_the_default_pause_sleeps_a_fifth_of_a_second_at_most() -> None:
    src = Source()
    started = time.monotonic()
    asyncio.run(long_poll(0.5, src.fetch, lambda n: False, recheck=src.recheck))
    assert 0.5 <= time.monotonic() - started < 1.5
    assert 3 <= src.fetched <= 5  # about every 0.2 s, and one at the deadline


def test_a_refused_recheck_ends_the_wait() -> None:
    src = Source()

    async def refused() -> None:
        raise Unauthorized("the token was revoked")

    started = time.monotonic()
    with pytest.raises(Unauthorized):
        asyncio.run(long_poll(30, src.fetch, lambda n: False, pause=src.pause, recheck=refused,
                              recheck_every=0.1))
    assert time.monotonic() - started < 2
