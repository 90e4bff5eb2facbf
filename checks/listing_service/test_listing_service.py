"""listing-service — listing creation failures, search not working, DynamoDB errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.indexing import IndexFreshness
from unibazzar_health.judges.runbook import (
    CheckContext,
    Finding,
    NotConfigured,
    failures_among,
    gather,
    runbook_check,
)
from unibazzar_health.probes import FailureKind, ProbeFailure
from unibazzar_health.probes.dynamodb import TableStatus
from unibazzar_health.probes.s3 import RoundTrip
from unibazzar_health.verdict.policy import human_duration


# ---- 1. Check DynamoDB table status and capacity ------------------------------------------
def observe_listings_table(ctx: CheckContext) -> dict[str, Any]:
    """The table's status and its capacity use over the window. The capacity metrics are
    CloudWatch's: where they cannot be read, the failure stands in their place (status is
    still judged first). A table not ACTIVE is also asked to serve a read and a write (a
    conditional update that never applies): UPDATING serves both, and is no outage."""
    from unibazzar_health.probes import dynamodb

    aws = ctx.aws("dynamodb")
    table = dynamodb.describe_table(aws, ctx.env.spec.aws.listings_table)  # type: ignore[union-attr]
    if not table.exists:
        return {"table": table, "capacity": None}  # no table to measure
    calls: dict[str, Callable[[], Any]] = {"capacity": lambda: dynamodb.capacity_use(
        aws, table.table, list(table.index_statuses),
        ctx.env.spec.thresholds.dynamodb_window_minutes)}
    if table.status != "ACTIVE":
        calls |= {"reads_ms": lambda: dynamodb.serves_reads(aws, table),
                  "writes_ms": lambda: dynamodb.serves_writes(aws, table)}
    return {"table": table} | gather(**calls)


def _capacity_problems(table: TableStatus, capacity: Any,
                       thresholds: Thresholds) -> tuple[list[str], dict[str, str]]:
    """Throttling, and consumption near what is provisioned, for the table and its indexes;
    with the read and write capacity to scale the table to (twice what it has, for what
    is short) where it is provisioned."""
    problems: list[str] = []
    scale = {"read": False, "write": False}
    window = f"{capacity.window_minutes:g} min"
    for kind, throttles in (("read", capacity.read_throttles),
                            ("write", capacity.write_throttles)):
        for name, events in throttles.items():
            if events > thresholds.dynamodb_throttles_max:
                where = f"index {name}" if name else f"table {table.table}"
                problems.append(f"{where} throttled {events} {kind}s in the last {window}")
                scale[kind] = True
    provisioned = {"": (table.read_capacity, table.write_capacity), **table.index_capacity}
    for kind, peaks, at in (("read", capacity.read_peak, 0), ("write", capacity.write_peak, 1)):
        for name, peak in peaks.items():
            units = (provisioned.get(name) or (None, None))[at]
            if units and peak >= thresholds.dynamodb_capacity_usage * units:
                where = f"index {name}" if name else f"table {table.table}"
                problems.append(f"{where} consumed {peak:g} of {units} provisioned {kind} "
                                f"units/s at its busiest minute ({peak / units:.0%} >= "
                                f"{thresholds.dynamodb_capacity_usage:.0%})")
                scale[kind] = True
    names = {}
    if any(scale.values()) and table.read_capacity and table.write_capacity:
        names = {"read_capacity": str(table.read_capacity * (2 if scale["read"] else 1)),
                 "write_capacity": str(table.write_capacity * (2 if scale["write"] else 1))}
    return problems, names


@runbook_check("listing.dynamodb-table-status", observe=observe_listings_table)
def test_step1_dynamodb_table_status_and_capacity(observed: dict[str, Any],
                                                  thresholds: Thresholds) -> None:
    table: TableStatus = observed["table"]
    _judge_table(table, observed.get("reads_ms"), observed.get("writes_ms"))
    # Past that, a table not ACTIVE serves reads and writes: a change in progress (UPDATING,
    # perhaps the last "scale capacity"), whose fix is to wait, not to scale again.
    changing = table.status != "ACTIVE"
    capacity = observed["capacity"]
    if isinstance(capacity, ProbeFailure):
        # Not a pass: throttling would go unseen. Pinned on CloudWatch, whose failure's kind
        # picks the fix (read the metrics by hand, grant the read), not "scale the table".
        raise Finding(f"DynamoDB table {table.table} is {table.status}, but its capacity could "
                      f"not be judged: {capacity.message}", impact="non-critical",
                      failures=(capacity,))
    problems, names = _capacity_problems(table, capacity, thresholds)
    if problems:
        mode = "on demand" if table.billing_mode == "PAY_PER_REQUEST" else "provisioned"
        raise Finding(f"DynamoDB table {table.table} ({mode}) is short of capacity: "
                      + "; ".join(problems)
                      + (f" (it is {table.status}: a change is in progress, wait for it "
                         "before scaling again)" if changing else ""),
                      impact="degradation", names=names,
                      mode="change-in-progress" if changing else None)


def _judge_table(observed: TableStatus, reads: Any, writes: Any) -> None:
    """Missing: data lost. Not ACTIVE: an outage only where reads or writes fail (or could
    not be tried at all). Indexes not ACTIVE: a degradation while they are built."""
    if not observed.exists:
        # Named as a missing object, so the verdict says restore it, not scale it.
        missing = ProbeFailure("dynamodb", f"table {observed.table}", FailureKind.MISSING_OBJECT,
                               "the table does not exist")
        raise Finding(f"DynamoDB table {observed.table} does not exist", impact="data",
                      failures=(missing,))
    if observed.status != "ACTIVE":
        tried = {"reads": reads, "writes": writes}
        # Our identity refused (no dynamodb:UpdateItem, say) judges nothing of the table.
        failing = {what: f for what, f in tried.items() if isinstance(f, ProbeFailure)
                   and f.kind is not FailureKind.AUTH_REJECTED}
        served = [what for what, ms in tried.items() if isinstance(ms, float | int)]
        if failing or not served:
            why = "; ".join(f.message for f in failing.values()) or "; ".join(
                f"{what}: {f.message if isinstance(f, ProbeFailure) else 'not tried'}"
                for what, f in tried.items())
            # DescribeTable found the table: a data-plane "not found" (a table CREATING or
            # DELETING) is no deleted table to restore, but the table not serving.
            pinned = tuple(replace(f, kind=FailureKind.UNEXPECTED_ANSWER)
                           if f.kind is FailureKind.MISSING_OBJECT else f
                           for f in failing.values())
            raise Finding(f"DynamoDB table {observed.table} is {observed.status}, not ACTIVE, "
                          f"and serves no {' or '.join(failing) or 'reads or writes'}: {why}",
                          impact="outage", mode="table-unavailable", failures=pinned)
    inactive = {name: s for name, s in observed.index_statuses.items() if s != "ACTIVE"}
    if inactive:
        raise Finding(f"indexes of {observed.table} not ACTIVE: {inactive}", impact="degradation",
                      mode="change-in-progress")


# ---- 2. Review indexing performance -------------------------------------------------------
CANARY_CATEGORY = "health-check-canary"


def observe_indexing(ctx: CheckContext) -> dict[str, Any]:
    """A canary listing through the whole path (listing-service, DynamoDB, S3, the event,
    the search indexer, the vector database), timed until searchable, then deleted. A
    write: only where the environment sets canary.listing_writes."""
    import secrets
    import time

    from unibazzar_health.probes import ProbeError, http, vectordb

    canary = ctx.require("canary", ctx.env.spec.canary)
    if not canary.listing_writes:
        raise NotConfigured("canary.listing_writes")
    vector, collection = ctx.vector_db(), ctx.require("vector_db", ctx.env.spec.vector_db)
    deadline, budget = ctx.env.deadline("http"), ctx.env.spec.thresholds.indexing_budget_s
    title = "unibazzar health canary " + " ".join(secrets.token_hex(3) for _ in range(3))
    created = http.request("listing-service", "POST", ctx.service_url("listing-service",
                           "/listings"), deadline,
                           json={"title": title, "category": CANARY_CATEGORY, "price_cents": 0})
    body = created.body if isinstance(created.body, dict) else {}
    listing_id = (body.get("listing") or {}).get("listing_id")
    seen: dict[str, Any] = {"create_status": created.status, "listing_id": listing_id,
                            "budget_s": budget, "searchable_after_s": None}
    if not listing_id:
        return seen
    started = time.monotonic()
    try:
        while time.monotonic() - started < budget:
            if vectordb.has_ids(vector, collection.collection, [listing_id]):
                seen["searchable_after_s"] = round(time.monotonic() - started, 3)
                break
            time.sleep(0.1)
    finally:
        # The canary never outlives the check: delete it whatever happened above.
        try:
            seen["delete_status"] = http.request("listing-service", "DELETE", ctx.service_url(
                "listing-service", f"/listings/{listing_id}"), deadline).status
        except ProbeError as exc:
            seen["delete_status"] = str(exc)
    return seen


@runbook_check("listing.indexing-performance", observe=observe_indexing)
def test_step2_indexing_performance(observed: dict[str, Any]) -> None:
    assert observed["listing_id"], (
        f"listing-service could not create the canary listing: HTTP {observed['create_status']}")
    assert observed["searchable_after_s"] is not None, (
        f"canary listing {observed['listing_id']} not searchable after "
        f"{observed['budget_s']:g} s (the search indexer is behind or stopped)")
    if observed.get("delete_status") != 200:
        raise Finding(f"canary listing {observed['listing_id']} could not be deleted: HTTP "
                      f"{observed.get('delete_status')} (delete it by hand)", impact="minor")


# How many of the newest listings are compared with the search index.
NEWEST_LISTINGS = 10


def _queue_lag(ctx: CheckContext) -> dict[str, Any]:
    """The events queue as the search indexer leaves it (the management API's last sample)."""
    import time

    from unibazzar_health.probes import rabbitmq

    spec = ctx.require("rabbitmq", ctx.env.spec.rabbitmq)
    queue = rabbitmq.queue_state(ctx.broker(), spec.events_queue)
    now, backlog = time.time(), queue.messages
    return {
        "queue": queue.queue, "exists": queue.exists, "waiting": backlog,
        "consumers": queue.consumers, "ack_rate": queue.ack_rate,
        # Where publishers stamp their events.
        "oldest_waiting_s": (round(now - queue.head_message_timestamp, 1)
                             if backlog and queue.head_message_timestamp else None),
        # Events waiting, and nothing taken or acknowledged since.
        "still_s": round(now - queue.idle_since, 1) if backlog and queue.idle_since else None,
        "catch_up_s": (round(backlog / queue.ack_rate, 1)
                       if backlog and queue.ack_rate else None),
    }


def _index_freshness(ctx: CheckContext, path: str) -> IndexFreshness:
    """The newest listings as listing-service lists them, and which of them the search index
    holds: what a lost event leaves behind while the queue looks healthy."""
    import time

    from unibazzar_health.judges.indexing import index_freshness
    from unibazzar_health.probes import ProbeError, http, vectordb

    collection = ctx.require("vector_db", ctx.env.spec.vector_db)
    vector = ctx.vector_db()
    url = ctx.service_url("listing-service", path)
    url += ("&" if "?" in url else "?") + f"limit={NEWEST_LISTINGS}"
    answer = http.request("listing-service", "GET", url, ctx.env.deadline("http"))
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 200 or not isinstance(body.get("listings"), list):
        raise ProbeError("listing-service", url, f"newest listings: HTTP {answer.status}, "
                         f"{str(answer.body)[:200]!r}", ctx.env.deadline("http"),
                         kind=FailureKind.UNEXPECTED_ANSWER)
    listings = [(str(item.get("listing_id")), str(item.get("created_at")))
                for item in body["listings"] if isinstance(item, dict)]
    held = vectordb.has_ids(vector, collection.collection, [i for i, _ in listings]) \
        if listings else []
    return index_freshness(listings, held, time.time())


def observe_indexing_lag(ctx: CheckContext) -> dict[str, Any]:
    """Read-only, so an environment that writes no canary still gets an answer: the events
    queue as the search indexer leaves it, and, where listing-service lists its newest
    listings (newest_listings_path), the newest indexed listing against the newest."""
    service = ctx.env.spec.service("listing-service")
    path = service.newest_listings_path if service else None
    calls: dict[str, Any] = {}
    if ctx.env.spec.rabbitmq is not None:
        calls["queue"] = lambda: _queue_lag(ctx)
    if path:
        calls["index"] = lambda: _index_freshness(ctx, path)
    if not calls:
        raise NotConfigured("rabbitmq' or 'services.listing-service.newest_listings_path")
    return gather(**calls)


def _queue_lags(queue: dict[str, Any], limit: float) -> list[str]:
    # A missing queue or one without consumers is step 3's finding.
    if not queue["exists"] or not queue["waiting"]:
        return []
    lags = []
    if queue["oldest_waiting_s"] is not None and queue["oldest_waiting_s"] > limit:
        lags.append(f"the oldest waiting event is {queue['oldest_waiting_s']:.0f} s old")
    if queue["still_s"] is not None and queue["still_s"] > limit:
        lags.append(f"nothing taken or acknowledged for {queue['still_s']:.0f} s")
    if queue["catch_up_s"] is not None and queue["catch_up_s"] > limit:
        lags.append(f"at {queue['ack_rate']:g} events/s it needs {queue['catch_up_s']:.0f} "
                    "s to catch up")
    return lags


def _index_lag(index: IndexFreshness, limit: float) -> str | None:
    age = index.oldest_not_indexed_age_s
    if age is None or age <= limit:
        return None
    missing = (f"{index.not_indexed} of the {len(index.listings)} newest listings are not in "
               f"the search index, the oldest, {index.oldest_not_indexed_id}, created "
               f"{_age(age)} ago")
    if index.newest_indexed_id is None:
        return missing + "; none of them is indexed"
    return (missing + f"; the newest indexed listing ({index.newest_indexed_id}) is "
            f"{_age(index.newest_indexed_behind_s or 0.0)} older than the newest "
            f"({index.newest_id})")


def _age(seconds: float) -> str:
    """Seconds while they read at a glance, then as people say it ("335 d 10 h", never
    "28980694 s")."""
    return f"{seconds:.0f} s" if seconds < 120 else human_duration(seconds)


@runbook_check("listing.indexing-lag", observe=observe_indexing_lag)
def test_step2_the_search_indexer_keeps_up(observed: dict[str, Any],
                                           thresholds: Thresholds) -> None:
    limit = thresholds.indexing_lag_s
    found = []
    queue, index = observed.get("queue"), observed.get("index")
    if isinstance(queue, dict):
        lags = _queue_lags(queue, limit)
        if lags:
            found.append(f"the search indexer lags behind {queue['queue']}: "
                         f"{queue['waiting']} events waiting; " + "; ".join(lags))
    if isinstance(index, IndexFreshness):
        lag = _index_lag(index, limit)
        if lag:
            found.append(f"the search index lags behind the listings: {lag}")
    if found:
        raise Finding(" | ".join(found) + f" (> {limit:g} s)", impact="degradation")
    # A reading that failed leaves the lag unjudged: never a pass.
    failures = failures_among(queue, index)
    if failures:
        raise Finding.of(failures)


# ---- 3. Check event publishing to RabbitMQ ------------------------------------------------
def observe_event_publishing(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import rabbitmq

    spec = ctx.env.spec.rabbitmq
    broker = ctx.broker()
    assert spec is not None
    return gather(publish=lambda: rabbitmq.publish_canary(broker, spec.events_exchange),
                  queue=lambda: rabbitmq.queue_state(broker, spec.events_queue))


@runbook_check("listing.rabbitmq-event-publishing", observe=observe_event_publishing)
def test_step3_event_publishing_to_rabbitmq(observed: dict[str, Any],
                                            thresholds: Thresholds) -> None:
    publish, queue = observed["publish"], observed["queue"]
    failures = failures_among(publish, queue)
    if failures:
        raise Finding.of(failures)
    assert publish.confirmed, f"broker did not confirm the canary on {publish.exchange}"
    if not publish.unrouted:
        raise Finding(f"the canary routing key {publish.routing_key} reaches a queue on "
                      f"{publish.exchange}: a binding catches it, so consumers may receive "
                      f"health-check canaries", impact="minor")
    assert queue.exists, f"events queue {queue.queue} does not exist"
    assert queue.consumers > 0, f"events queue {queue.queue} has no consumers " \
                                f"({queue.messages} messages waiting)"
    assert queue.messages <= thresholds.queue_depth_max, (
        f"events queue {queue.queue} backed up: {queue.messages} messages "
        f"> {thresholds.queue_depth_max}")


# ---- 4. Verify S3 connectivity for image uploads ------------------------------------------
def observe_image_bucket(ctx: CheckContext) -> RoundTrip:
    from unibazzar_health.probes import s3

    spec = ctx.env.spec.aws
    aws = ctx.aws("s3")
    assert spec is not None
    return s3.canary_round_trip(aws, spec.images_bucket, spec.canary_prefix)


@runbook_check("listing.s3-image-uploads", observe=observe_image_bucket)
def test_step4_s3_connectivity_for_image_uploads(observed: RoundTrip) -> None:
    if not observed.bucket_exists:
        missing = ProbeFailure("s3", f"bucket {observed.bucket}", FailureKind.MISSING_OBJECT,
                               "the bucket does not exist")
        raise Finding(f"S3 bucket {observed.bucket} does not exist", impact="data",
                      failures=(missing,))
    assert observed.content_matches, f"canary object read back from {observed.bucket} differs"
    assert not observed.left_behind, f"canary {observed.key} could not be deleted"


# ---- Common fix "Clear Redis cache if stale data": cache freshness ------------------------
def observe_cache_freshness(ctx: CheckContext) -> dict[str, Any]:
    """The canary listing twice, read-only: as the API serves it (from its cache, if there)
    and as DynamoDB holds it. The canary never changes, so any difference is stale data."""
    from unibazzar_health.probes import dynamodb, http

    canary = ctx.require("canary", ctx.env.spec.canary)
    listing_id = ctx.require("canary.listing_id", canary.listing_id)
    aws = ctx.require("aws", ctx.env.spec.aws)
    url = ctx.service_url("listing-service", f"/listings/{listing_id}")
    target = ctx.aws("dynamodb")
    seen = gather(
        api=lambda: http.request("listing-service", "GET", url, ctx.env.deadline("http")),
        source=lambda: dynamodb.get_item(target, aws.listings_table,
                                         {"listing_id": listing_id}),
    )
    api = seen["api"]
    if not isinstance(api, ProbeFailure):
        body = api.body if isinstance(api.body, dict) else {}
        seen["api"] = {"status": api.status, "served_from": body.get("source"),
                       "listing": {k: str(v) for k, v in (body.get("listing") or {}).items()}}
    seen["listing_id"] = listing_id
    return seen


@runbook_check("listing.cache-freshness", observe=observe_cache_freshness)
def test_cache_serves_what_the_source_of_truth_holds(observed: dict[str, Any]) -> None:
    api, source = observed["api"], observed["source"]
    failures = failures_among(api, source)
    if failures:
        raise Finding.of(failures)
    listing_id = observed["listing_id"]
    assert source is not None, f"canary listing {listing_id} is not in DynamoDB"
    assert api["status"] == 200, f"listing-service answered HTTP {api['status']} for {listing_id}"
    stale = {k: (api["listing"].get(k), v) for k, v in source.items()
             if api["listing"].get(k) != v}
    if stale:
        shown = ", ".join(f"{k}: {served!r} served, {held!r} stored"
                          for k, (served, held) in sorted(stale.items()))
        raise Finding(f"stale data: listing-service serves canary listing {listing_id} "
                      f"from its {api['served_from'] or 'answer'} unlike DynamoDB ({shown})",
                      impact="minor")
