"""What an environment remembers between runs, and the interface of the stores that keep it.

The data is plain (dataclasses of strings, numbers, lists and dicts) and round-trips through
JSON: the SQLite and Redis stores keep the same documents. Times are ISO 8601 strings in UTC.

- ``EnvironmentState``: per environment, the open incidents (and those failing but not yet
  alerted) keyed by the root cause key they opened with (``dependency:redis``,
  ``service:order-service``) with their consecutive failing/passing runs, and the last
  resolved ones (for the timeline and the post-mortem). Its document carries a ``version``:
  a runner that finds one newer than it reads says so (StateFormatError) instead of
  guessing.
- ``RunRecord``: one run's summary, kept with bounded retention, so first/previous summaries of
  an incident can be read back.
- ``Delivery``: one message to one notifier, in the outbox. Its status moves
  pending → sending (claimed by one runner, compare-and-set) → sent | pending (failed, retried
  by the next run) | failed (given up) | unknown (it may have arrived — no answer came, or
  the runner died while sending — and resending could post twice: a human checks) |
  superseded (a newer update of the same incident replaced it before it went out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

# A person acknowledged the incident (``incident ack``): PagerDuty hears ``acknowledge``,
# the chat and the ticket who took it.
ACKNOWLEDGED = "acknowledged"
KINDS = ("alert", "update", "escalation", "resolved", ACKNOWLEDGED)
# In a notifier's kinds: the updates whose severity changed, and only those (PagerDuty is
# re-triggered with the new severity; the chat hears every update).
SEVERITY_CHANGE = "update:severity"
PENDING, SENDING, SENT, FAILED, UNKNOWN, SUPERSEDED = (
    "pending", "sending", "sent", "failed", "unknown", "superseded")
FINISHED = (SENT, FAILED, UNKNOWN, SUPERSEDED)  # no runner moves a delivery out of these
# The state document's layout. A document without the field was written before it existed,
# in the layout of version 1. Version 2 adds what people do (ack, IC, notes, a resolution
# by hand, silences): a version-1 runner refuses it clearly rather than misread it.
STATE_VERSION = 2


class StoreError(Exception):
    """The state store could not be read or written in time (its text names the store,
    never a password)."""


class StoreBusy(StoreError):
    """Another run held the environment's lock for longer than we wait."""


class StateFormatError(StoreError):
    """The state document is of a version this runner does not read, or cannot be read
    (written by another version of unibazzar-health, or by hand)."""


@dataclass
class Event:
    """One line of an incident's timeline."""

    at: str
    kind: str  # failing | alert | update | severity | checks | escalation | silenced |
    #            unsilenced | resolved; a person's: ack | ic | note | resolve | reopened
    text: str
    by: str | None = None  # who, for a person's event (``incident ack --by @name``)


@dataclass
class Incident:
    id: str  # this occurrence: a key that fails again after resolving is a new incident
    key: str  # the root cause key it opened with: its identity while open
    title: str
    services: list[str]
    dependency: str | None
    severity: str
    first_failure_at: str
    first_run_id: str
    last_failure_at: str
    last_failing_run_id: str
    checks: list[str]  # failing now, as far as the runs observed them
    all_checks: list[str]  # every check it has involved
    last_failing_checks: list[str] = field(default_factory=list)  # before it healed
    # What an update or resolution says of a check when its run summary is no longer kept.
    check_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    failing_runs: int = 0
    passing_runs: int = 0
    first_passing_run_id: str | None = None
    first_passing_at: str | None = None
    alerted: bool = False
    alerted_at: str | None = None
    last_update_at: str | None = None  # when the last alert or update was decided
    last_posted_run_id: str | None = None  # the run that alert or update told of
    posted_checks: list[str] = field(default_factory=list)  # …its failing checks
    posted_severity: str | None = None  # …and its severity
    posted_started_at: str | None = None  # …and when that run began
    next_update_at: str | None = None
    escalation_level: int = 1
    silenced: dict[str, Any] | None = None  # {"reason", "until"} while every check is muted
    messages: dict[str, int] = field(default_factory=dict)  # kind -> how many decided
    resolved_at: str | None = None
    resolved_run_id: str | None = None
    events: list[Event] = field(default_factory=list)
    # The incident commander's loop (``python -m unibazzar_health incident …``):
    ic: str | None = None  # assigned IC (else the [oncall] primary)
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    acknowledged_severity: str | None = None  # a rise above it escalates despite the ack
    notes: list[dict[str, Any]] = field(default_factory=list)  # {"at", "by", "text"}
    # A person said it is resolved: {"at", "by", "reason"}; the next run confirms or reopens.
    human_resolution: dict[str, Any] | None = None
    resolution_reason: str | None = None  # kept once resolved (a person's reason)
    secondary_paged_at: str | None = None  # Level 1 reached the secondary (no ack in time)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Incident:
        values = dict(data)
        values["events"] = [Event(**e) for e in values.get("events", [])]
        return cls(**values)


@dataclass
class Delivery:
    id: str  # deterministic: incident occurrence, kind, its number, notifier
    environment: str
    incident_id: str
    incident_key: str
    kind: str  # one of KINDS
    notifier: str
    payload: dict[str, Any]  # {"message", "summary", "incident"}: redacted before it is stored
    dedup_key: str  # the same for every message of one incident key in one environment
    created_at: str
    status: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    updated_at: str | None = None
    claimed_by: str | None = None  # host:pid:run of the runner sending it
    claimed_at: str | None = None
    receipt: dict[str, Any] | None = None  # what the service answered (an issue number…)
    sent_at: str | None = None
    seq: int = 0  # order of enqueueing, assigned by the store
    headline: str = ""  # the message's first line, for the timeline
    # Not sent before this time (ISO): the service rate-limited it and said how long to wait.
    not_before: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Delivery:
        return cls(**dict(data))


@dataclass
class EnvironmentState:
    environment: str
    incidents: dict[str, Incident] = field(default_factory=dict)  # open or pending, by key
    closed: list[Incident] = field(default_factory=list)  # resolved, oldest first
    # The outbox as it stood when the state was loaded (kept by the store in its own rows,
    # not in this document), without payloads: StateStore.deliveries reads those.
    outbox: list[Delivery] = field(default_factory=list)
    # Timed silences a person set (``incident silence``): {"checks", "until", "reason",
    # "by", "incident"}; the environment file's [[silences]] are the policy's.
    silences: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """What the store saves as the state document (the outbox is stored apart)."""
        return {"version": STATE_VERSION, "environment": self.environment,
                "incidents": {k: dataclasses.asdict(v) for k, v in self.incidents.items()},
                "closed": [dataclasses.asdict(i) for i in self.closed],
                "silences": list(self.silences)}

    @classmethod
    def from_document(cls, environment: str, data: Mapping[str, Any] | None,
                      outbox: Iterable[Delivery] = (), *, where: str = "the store"
                      ) -> EnvironmentState:
        """The state from its stored document; raises StateFormatError (naming ``where``)
        for a version this runner does not read or a document it cannot read."""
        data = data or {}
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or \
                not 1 <= version <= STATE_VERSION:
            raise StateFormatError(
                f"{where}: the state of {environment} is version {version!r}; this "
                f"unibazzar-health reads versions 1 to {STATE_VERSION}: run the same version "
                "on every runner that shares the store (nothing decided, nothing changed)")
        try:
            # A version 1 document may still hold "checks" (per-check streaks, never read).
            return cls(
                environment=environment,
                incidents={k: Incident.from_dict(v)
                           for k, v in data.get("incidents", {}).items()},
                closed=[Incident.from_dict(v) for v in data.get("closed", [])],
                outbox=list(outbox), silences=list(data.get("silences", [])))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StateFormatError(
                f"{where}: the state of {environment} cannot be read ({type(exc).__name__}: "
                f"{exc}): written by another version of unibazzar-health? (nothing decided, "
                "nothing changed)") from None

    def find(self, key: str | None = None) -> Incident | None:
        """The incident named by key (open first, then the latest resolved); without a key,
        the latest opened one still open, else the latest resolved."""
        if key is not None:
            if key in self.incidents:
                return self.incidents[key]
            matches = [i for i in self.closed if key in (i.key, i.id)]
            return matches[-1] if matches else None
        alerted = sorted((i for i in self.incidents.values() if i.alerted),
                         key=lambda i: i.first_failure_at)
        if alerted:
            return alerted[-1]
        return self.closed[-1] if self.closed else None

    def deliveries_of(self, incident: Incident) -> list[Delivery]:
        return sorted((d for d in self.outbox if d.incident_id == incident.id),
                      key=lambda d: d.seq)

    def ticket_of(self, incident_id: str) -> dict[str, Any] | None:
        """The tracking ticket created for this incident (its create delivery's receipt)."""
        for delivery in self.outbox:
            if (delivery.incident_id == incident_id and delivery.notifier == "ticket"
                    and delivery.kind == "alert" and delivery.status == SENT):
                return delivery.receipt
        return None


@dataclass(frozen=True)
class RunRecord:
    id: str
    started_at: str
    status: str  # the verdict's: failing | incomplete | healthy
    summary: dict[str, Any]


@dataclass(frozen=True)
class StatusChange:
    """An outbox row moved by the deciding transaction (stale claims, superseded updates)."""

    delivery_id: str
    status: str
    error: str | None = None
    # Only change it while it still has this status (another runner may have moved it).
    expected: str | None = None
    attempts: int | None = None  # its sends so far, when the change counts one more


class Transaction(Protocol):
    """The environment's state under its lock: read, decide, then save once (or leave the
    block without saving to change nothing)."""

    state: EnvironmentState

    def runs(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored summaries of these runs (those still kept)."""
        ...

    def save(self, state: EnvironmentState, *, run: RunRecord | None,
             deliveries: list[Delivery], changes: list[StatusChange], now: str) -> None:
        """The new state, the run, new deliveries (pending) and status changes, at once."""
        ...


def encode(data: Any) -> bytes:
    """A summary or payload as the stores keep it: compact JSON, compressed (a summary with
    its evidence is tens of kB, and hundreds are kept)."""
    import json
    import zlib

    return zlib.compress(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), 6)


def decode(blob: bytes) -> Any:
    import json
    import zlib

    return json.loads(zlib.decompress(blob))


class StateStore(Protocol):
    """One environment's incident memory. Every operation is bounded in time (socket
    timeouts, busy timeouts, a bounded lock wait) and raises StoreError when it cannot."""

    @property
    def where(self) -> str:
        """The store as a person names it (a path, a host:port/db): never a password."""
        ...

    def exists(self) -> bool:
        """False while nothing was ever saved where it must be created first (a SQLite
        file): nothing is remembered, and a read must not create it."""
        ...

    def peek(self, environment: str) -> EnvironmentState:
        """The state and outbox as they are now, without the lock (read only)."""
        ...

    def transaction(self, environment: str) -> AbstractContextManager[Transaction]:
        """The environment's lock for one short read-decide-save."""
        ...

    def runs(self, environment: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ...

    def deliveries(self, environment: str, statuses: Iterable[str]) -> list[Delivery]:
        """Outbox rows in these statuses with their payloads, in the order enqueued."""
        ...

    def claim(self, environment: str, delivery_id: str, claimant: str, now: str) -> bool:
        """Compare-and-set pending → sending: True for exactly one caller."""
        ...

    def finish(self, environment: str, delivery_id: str, claimant: str, status: str, *,
               now: str, attempts: int, error: str | None = None,
               receipt: dict[str, Any] | None = None, not_before: str | None = None) -> bool:
        """Record what became of a delivery this claimant was sending (sending → status);
        False when it was not ours any more."""
        ...

    def delivery(self, environment: str, delivery_id: str) -> Delivery | None:
        """One outbox row as it is now (without its payload)."""
        ...

    def close(self) -> None:
        ...
