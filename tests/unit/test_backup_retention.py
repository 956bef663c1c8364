"""Grandfather-father-son retention of scheduled backups (tether.backups.sets.kept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tether.backups.sets import kept


def daily(days: int, start: datetime) -> list[tuple[int, datetime]]:
    """One backup a day at 03:00 for `days` days up to `start`, newest id highest."""
    return [(i + 1, start - timedelta(days=days - 1 - i)) for i in range(days)]


def test_keeps_the_newest_of_each_day_week_and_month() -> None:
    now = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)  # a Thursday
    backups = daily(400, now)
    keep = kept(backups, daily=7, weekly=4, monthly=12)
    by_id = dict(backups)
    dates = sorted(by_id[i].date() for i in keep)
    # the last 7 days
    assert [d.isoformat() for d in dates[-7:]] == [
        "2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02",
        "2026-12-03"]
    # the newest of each of the last 4 ISO weeks (Sundays ending the earlier weeks)
    weeks = {by_id[i].isocalendar()[:2] for i in keep}
    assert {(2026, 49), (2026, 48), (2026, 47), (2026, 46)} <= weeks
    # the newest of each of the last 12 months: month ends, and today for December
    months = sorted({(by_id[i].year, by_id[i].month) for i in keep})
    assert len(months) == 12 and months[0] == (2026, 1) and months[-1] == (2026, 12)
    assert datetime(2026, 10, 31, 3, 0, tzinfo=UTC).date() in dates
    assert len(keep) <= 7 + 4 + 12
    # nothing older than a year is kept
    assert min(dates) >= datetime(2026, 1, 1).date()


def test_several_backups_a_day_keep_the_newest_and_zero_keeps_none() -> None:
    now = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    backups = [(1, now - timedelta(hours=3)), (2, now - timedelta(hours=1)), (3, now)]
    assert kept(backups, daily=1, weekly=0, monthly=0) == {3}
    assert kept(backups, daily=0, weekly=0, monthly=0) == set()
    assert kept([], daily=7, weekly=4, monthly=12) == set()
