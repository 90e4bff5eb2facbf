"""Newest indexed listing against newest listing (listing.indexing-lag, read-only)."""

from __future__ import annotations

from datetime import UTC, datetime

from unibazzar_health.judges.indexing import index_freshness

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC).timestamp()


def ago(seconds: float) -> str:
    return datetime.fromtimestamp(NOW - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_all_indexed_nothing_missing() -> None:
    seen = index_freshness([("b", ago(10)), ("a", ago(100))], ["a", "b"], NOW)
    assert (seen.newest_id, seen.newest_indexed_id, seen.newest_indexed_behind_s) == ("b", "b", 0)
    assert (seen.not_indexed, seen.oldest_not_indexed_id, seen.oldest_not_indexed_age_s) == (
        0, None, None)


def test_the_newest_indexed_against_the_newest_and_the_oldest_listing_missing() -> None:
    # In any order; a listing older than an indexed one still counts (its event was lost).
    seen = index_freshness([("lost", ago(600)), ("c", ago(30)), ("a", ago(300)),
                            ("b", ago(200))], ["a"], NOW)
    assert [listing.listing_id for listing in seen.listings] == ["c", "b", "a", "lost"]
    assert (seen.newest_id, seen.newest_indexed_id, seen.newest_indexed_behind_s) == (
        "c", "a", 270)
    assert (seen.not_indexed, seen.oldest_not_indexed_id, seen.oldest_not_indexed_age_s) == (
        3, "lost", 600)


def test_none_indexed() -> None:
    seen = index_freshness([("b", ago(10)), ("a", ago(100))], [], NOW)
    assert seen.newest_indexed_id is None and seen.newest_indexed_behind_s is None
    assert (seen.not_indexed, seen.oldest_not_indexed_id, seen.oldest_not_indexed_age_s) == (
        2, "a", 100)


def test_no_listings_or_no_readable_time() -> None:
    seen = index_freshness([("x", "yesterday")], [], NOW)
    assert seen.listings == [] and seen.newest_id is None and seen.not_indexed == 0
    assert index_freshness([], [], NOW).oldest_not_indexed_age_s is None
