"""Newest indexed listing against newest listing: how far the search index is behind the
listings, from the newest listings and which of them the index holds. Plain logic, no I/O.

The comparison alone would miss a listing whose event was lost when newer ones were indexed
after it, so every listing among the newest that the index lacks is counted, with the age
of the oldest: the check judges that age against its lag budget."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NewestListing:
    listing_id: str
    created_at: str  # ISO 8601, as listing-service gives it
    indexed: bool


@dataclass(frozen=True)
class IndexFreshness:
    listings: list[NewestListing]  # newest first
    newest_id: str | None
    newest_indexed_id: str | None  # None: none of the listings read is indexed
    # The newest listing's lead over the newest indexed one, in seconds.
    newest_indexed_behind_s: float | None
    # The listings read that the index lacks, and the oldest one's age.
    not_indexed: int
    oldest_not_indexed_id: str | None
    oldest_not_indexed_age_s: float | None


def _moment(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def index_freshness(listings: Iterable[tuple[str, str]], indexed: Iterable[str],
                    now: float) -> IndexFreshness:
    """``listings``: (id, created_at) of the newest listings, in any order; ``indexed``:
    which of them the search index holds. A listing without a readable time is left out:
    it can be neither newest nor late."""
    held = set(indexed)
    timed = sorted(((moment, listing_id, created) for listing_id, created in listings
                    if (moment := _moment(created)) is not None), reverse=True)
    newest = [NewestListing(listing_id, created, listing_id in held)
              for _, listing_id, created in timed]
    first_indexed = next((n for n, listing in enumerate(newest) if listing.indexed), None)
    missing = [n for n, listing in enumerate(newest) if not listing.indexed]
    oldest = missing[-1] if missing else None
    return IndexFreshness(
        listings=newest, newest_id=newest[0].listing_id if newest else None,
        newest_indexed_id=newest[first_indexed].listing_id if first_indexed is not None else None,
        newest_indexed_behind_s=(round(timed[0][0] - timed[first_indexed][0], 1)
                                 if first_indexed is not None else None),
        not_indexed=len(missing),
        oldest_not_indexed_id=newest[oldest].listing_id if oldest is not None else None,
        oldest_not_indexed_age_s=round(now - timed[oldest][0], 1) if oldest is not None else None)
