"""After the summary is on disk: decide under the store's lock, then post outside it.

1. Under the environment's lock (one short transaction): deliveries a dead runner left in
   ``sending`` are settled (PagerDuty's and the ticket's go back to pending: PagerDuty's
   dedup_key makes a resend harmless, the ticket looks for its marker before sending again;
   Slack's and the webhook's become ``unknown``, never resent, and are named on the terminal
   for a human to check), the lifecycle decides, the new deliveries are enqueued, a
   resolution supersedes what its notifier cancels (a PagerDuty trigger never sent), and the
   state and the run's summary saved.
2. Outside the lock, the outbox is drained in order. A delivery is sent only when every
   earlier delivery of the same incident to the same notifier is final (sent, failed,
   superseded, unknown), whoever holds it: a resolve never overtakes its trigger, from any
   runner. Each is claimed (pending → sending, compare-and-set: two runners never send the
   same one), sent with a per-request deadline and a few retries, all within the run's
   posting budget, and its result recorded. Each answer is classified (notifiers/base.py):
   sent; not delivered (retried, after the service's Retry-After where it gives one, else
   left pending with its not-before time for the next run); refused for good (``failed``
   at once with the service's words and the setting to fix: it never holds back later
   deliveries); may have arrived (retried in this run only where the service deduplicates
   (PagerDuty), left for the next run where the notifier looks for it first (the ticket),
   else ``unknown``, named for a human like a crash mid-send: nothing is sent twice).

Posting never raises into the run and never changes its exit status: what went wrong is in
the report (terminal lines, reports/posting.json) — a store that cannot be used, a state
written by another version, or a bug of ours alike.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from unibazzar_health.config.environment import Environment
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.incidents import config, lifecycle
from unibazzar_health.incidents.lifecycle import Decision, Policy
from unibazzar_health.incidents.notifiers.base import (
    MIN_REQUEST_S,
    DeliveryError,
    Notifier,
    Outgoing,
    Receipt,
    RequestBudget,
)
from unibazzar_health.incidents.state import (
    FAILED,
    FINISHED,
    PENDING,
    SENDING,
    SENT,
    SUPERSEDED,
    UNKNOWN,
    Delivery,
    EnvironmentState,
    RunRecord,
    StateStore,
    StatusChange,
    StoreError,
)
from unibazzar_health.probes.deadline import within
from unibazzar_health.reports.messages import Message
from unibazzar_health.verdict.model import Silenced, Summary, stored_summaries
from unibazzar_health.verdict.policy import parse_time as at
from unibazzar_health.verdict.summary import write_json

POSTING_FILE = "posting.json"
SCHEMA = "unibazzar-health/posting/v1"
# Sends of one delivery, over all runs, before it is given up (status failed).
MAX_ATTEMPTS = 20
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Result:
    """What became of one delivery in this run."""

    delivery_id: str
    incident: str
    kind: str
    notifier: str
    headline: str
    status: str  # sent | pending | failed | unknown | skipped | would-post | would-retry
    attempts: int = 0  # over all runs
    tries: int = 0  # in this run
    error: str | None = None
    receipt: dict[str, Any] | None = None
    # How the last answer was classified: delivered | retry | maybe-delivered | refused
    # (docs/notifications.md); None when nothing was sent in this run.
    answer: str | None = None
    fix: str | None = None  # the setting to correct, when the service refused it
    not_before: str | None = None  # pending: not sent again before this time (rate limit)


@dataclass
class Report:
    environment: str
    store: str
    run_id: str
    dry_run: bool = False
    results: list[Result] = field(default_factory=list)
    silenced: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Posting stopped: the store could not be used, or something unexpected happened.
    error: str | None = None
    decided: bool = False  # this run's decision was saved (an error came after it)
    duration_s: float = 0.0
    written: str | None = None  # where this report is on disk (reports/posting.json)
    preview: list[str] = field(default_factory=list)  # a dry run: the messages, once each

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    def lines(self) -> list[str]:
        """The terminal's lines, under the verdict."""
        out: list[str] = []
        if self.error and not self.decided:
            out.append(f"POSTING skipped: {self.error}: nothing decided or posted in this "
                       "run; the summary is written and the next run tries again")
        elif self.error:
            out.append(f"POSTING stopped: {self.error}: what was not sent stays in the "
                       "outbox; the next run sends it")
        for item in self.silenced:
            out.append(f"SILENCED {item['check']}: {item['kind']} '{item['reason']}' (until "
                       f"{item['until']}): alerts nothing")
        out.extend(self.notes)
        for r in self.results:
            what = f"{r.notifier} {r.kind} {r.incident}"
            if r.status == SENT:
                extra = f" (ticket #{r.receipt['number']})" if r.receipt and "number" in \
                    r.receipt and r.kind == "alert" else ""
                out.append(f"POSTED {what}{extra}: {r.headline}")
                dropped = (r.receipt or {}).get("labels_dropped")
                if dropped:
                    out.append(f"  labels dropped by GitHub on that ticket: "
                               f"{', '.join(dropped)} (the token cannot push to the "
                               "repository: give it triage or write access)")
            elif r.status == PENDING:
                tries = f" after {r.tries} tr{'y' if r.tries == 1 else 'ies'}" if r.tries else ""
                when = f" (not before {r.not_before})" if r.not_before else ""
                out.append(f"POST {what} failed ({r.error}{tries}): will retry next run{when}")
            elif r.status == FAILED and r.answer == "refused":
                out.append(f"POST {what} REFUSED ({r.error}): not resent"
                           + (f" — {r.fix}" if r.fix else ""))
            elif r.status == FAILED:
                out.append(f"POST {what} failed ({r.error}): given up after {r.attempts} "
                           "attempts")
            elif r.status == UNKNOWN:
                out.append(f"POST {what} UNKNOWN: {r.error}")
            elif r.status == "skipped":
                out.append(f"POST {what} waits: {r.error}")
            elif r.status in ("would-post", "would-retry"):
                verb = "would post" if r.status == "would-post" else "would retry"
                out.append(f"DRY RUN {verb} {what}: {r.headline}")
        out.extend(self.preview)
        if self.written:
            out.append(f"posting: {self.written}")
        return out


def claimant_id(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead to us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_claim(delivery: Delivery, now: datetime, lease_s: float,
                host: str | None = None) -> bool:
    """A delivery left in ``sending`` by a runner that is gone: one on this host whose
    process no longer exists, or one whose claim is older than any run could hold it."""
    if delivery.status != SENDING:
        return False
    if delivery.claimed_at is None or now - at(delivery.claimed_at) > timedelta(
            seconds=lease_s):
        return True
    claim_host, _, rest = (delivery.claimed_by or "").partition(":")
    pid_text = rest.partition(":")[0]
    if claim_host == (host or socket.gethostname()) and pid_text.isdigit():
        pid = int(pid_text)
        return pid != os.getpid() and not _alive(pid)
    return False


def settle_stale(state: EnvironmentState, notifiers: Mapping[str, Notifier], now: datetime,
                 lease_s: float) -> tuple[list[StatusChange], list[Result]]:
    """Deliveries a dead runner was sending: resent where harmless (the send it was making
    counts as an attempt, so the resend looks for it first), else ``unknown``."""
    changes, results = [], []
    for d in state.outbox:
        if not stale_claim(d, now, lease_s):
            continue
        notifier = notifiers.get(d.notifier)
        if notifier is not None and (d.kind in notifier.idempotent
                                     or d.kind in notifier.recoverable):
            how = ("deduplicated by its dedup_key" if d.kind in notifier.idempotent
                   else "it looks for what the stopped run sent first")
            error = f"the run sending it stopped before recording the result: resent ({how})"
            d.status, d.attempts = PENDING, d.attempts + 1
            changes.append(StatusChange(d.id, PENDING, error, expected=SENDING,
                                        attempts=d.attempts))
            continue
        error = (f"the run sending it ({d.claimed_by}) stopped before recording the result: "
                 f"not resent, so nobody is notified twice — check {d.notifier} by hand")
        d.status = UNKNOWN
        changes.append(StatusChange(d.id, UNKNOWN, error, expected=SENDING))
        results.append(Result(d.id, d.incident_key, d.kind, d.notifier, d.headline, UNKNOWN,
                              d.attempts, 0, error))
    return changes, results


@dataclass
class _Tries:
    """What one run's tries of a delivery came to (Poster._try), for its fate (_settle)."""

    attempts: int  # over all runs, this one's included
    receipt: Receipt | None = None
    error: str | None = None
    refused: bool = False  # refused for good: a 4xx that can never succeed as sent
    wait: float | None = None  # the service's Retry-After we could not wait for
    # It may have reached the service (no answer came, or a send overran the budget and
    # is still running) and a resend now could post twice.
    maybe_delivered: bool = False


class Poster:
    """One run's posting for one environment: built once in the plugin, from the resolved
    settings."""

    def __init__(self, env: Environment, run_mode: str, reports_dir: Path, redactor: Redactor,
                 *, dry_run: bool = False, store: StateStore | None = None,
                 notifiers: list[Notifier] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.env, self.reports_dir, self.dry_run = env, reports_dir, dry_run
        self.notifiers = config.notifiers(env) if notifiers is None else notifiers
        self.by_name = {n.name: n for n in self.notifiers}
        self.policy: Policy = config.policy(env, run_mode, self.notifiers)
        self.store = store if store is not None else config.open_store(env, reports_dir)
        notify = env.spec.notify
        self.deadline = notify.deadline if notify else 5.0
        self.retries = notify.retries if notify else 2
        self.budget = notify.budget if notify else 20.0
        # A claim older than this was left by a runner that is gone (posting is bounded by
        # the budget; the margin covers clocks that differ between machines).
        self.lease_s = self.budget + 30.0
        self.redactor = Redactor([*env.secrets.values(),
                                  *(h for n in self.notifiers for h in n.hidden())])
        self.clock = clock or (lambda: datetime.now(UTC))
        self.run_id = ""
        self._early_error: str | None = None  # first_failure_at could not read the store
        # (notifier, incident) -> its alert's receipt, for a threaded notifier (the ticket's
        # number, the Slack thread's ts): later messages go there.
        self._roots: dict[tuple[str, str], Any] = {}
        self._roots_lost: set[tuple[str, str]] = set()  # its alert is unknown or failed

    # ---- before the summary -------------------------------------------------------------
    def _absent(self) -> bool:
        """Nothing remembered yet (and a read must not create the store)."""
        return not self.store.exists()

    def first_failure_at(self, failing: Collection[str]) -> datetime | None:
        """When the incident behind these failing checks began, read (no lock) from the
        store; None when it remembers none or cannot be read (posting reports that). Never
        raises: it runs before the summary is written."""
        try:
            if not failing or self._absent():
                return None
            return lifecycle.first_failure_at(self.store.peek(self.env.name), failing)
        except StoreError as exc:
            self._early_error = self.redactor.text(str(exc))
        except Exception as exc:  # a bug of ours or a state we misread: never the run's end
            self._early_error = self.redactor.text(_unexpected(exc))
        return None

    def silenced(self, summary: Summary) -> list[Silenced]:
        return lifecycle.silenced_report(summary, self.policy.mutes, at(summary.finished_at))

    # ---- after the summary --------------------------------------------------------------
    def post(self, summary: Summary) -> Report:
        """Decide, record, deliver; never raises: a store that cannot be used, a state of
        another version or a bug of ours is the report's error."""
        started = time.monotonic()
        try:
            began = at(summary.started_at).strftime("%Y%m%dT%H%M%SZ")
        except (TypeError, ValueError):
            began = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = began + "-" + uuid.uuid4().hex[:8]
        report = Report(self.env.name, self.store.where, self.run_id, dry_run=self.dry_run)
        try:
            redacted = Summary.model_validate(self.redactor.data(summary.to_dict()))
            if self.dry_run:
                self._dry_run(redacted, report)
            else:
                self._decide(redacted, report)
                report.decided = True
                self._drain(report, started)
        except StoreError as exc:
            report.error = self.redactor.text(str(exc))
        except Exception as exc:  # a bug of ours or a state we misread: reported, not raised
            report.error = self.redactor.text(_unexpected(exc))
        finally:
            try:
                self.store.close()
            except Exception as exc:
                report.notes.append(self.redactor.text(f"closing {self.store.where}: "
                                                       f"{_unexpected(exc)}"))
        if self._early_error and self._early_error != report.error:
            report.notes.append(f"when the incident began was not read from the store: "
                                f"{self._early_error}")
        report.duration_s = round(time.monotonic() - started, 3)
        return report

    def _dry_run(self, summary: Summary, report: Report) -> None:
        state = (EnvironmentState(self.env.name) if self._absent()
                 else self.store.peek(self.env.name))
        runs = ({} if self._absent()
                else self.store.runs(self.env.name, lifecycle.runs_needed(state)))
        decision = lifecycle.decide(state, summary, self.run_id, self.policy,
                                    at(summary.finished_at), stored_summaries(runs))
        report.silenced = [s.model_dump(mode="json") for s in decision.silenced]
        report.notes = decision.notes
        for d in state.outbox:
            if d.status == PENDING:
                report.results.append(Result(d.id, d.incident_key, d.kind, d.notifier,
                                             d.headline, "would-retry", d.attempts))
        for d in decision.deliveries:
            report.results.append(Result(d.id, d.incident_key, d.kind, d.notifier,
                                         self.redactor.text(d.headline), "would-post"))
        report.preview = _message_lines(decision, self.redactor)

    def _decide(self, summary: Summary, report: Report) -> None:
        now = self.clock()
        with self.store.transaction(self.env.name) as tx:
            stale, unknown = settle_stale(tx.state, self.by_name, now, self.lease_s)
            report.results.extend(unknown)
            decision = lifecycle.decide(tx.state, summary, self.run_id, self.policy,
                                        at(summary.finished_at),
                                        stored_summaries(tx.runs(lifecycle.runs_needed(tx.state))))
            for delivery in decision.deliveries:
                delivery.payload = self.redactor.data(delivery.payload)
                delivery.headline = self.redactor.text(delivery.headline)
            cancelled = cancelled_by_resolutions(decision.state.outbox, decision.deliveries,
                                                 self.by_name)
            tx.save(decision.state,
                    run=RunRecord(self.run_id, summary.started_at, summary.verdict.status,
                                  summary.to_dict()),
                    deliveries=decision.deliveries,
                    changes=[*stale, *decision.changes, *cancelled],
                    now=now.isoformat(timespec="seconds"))
        report.silenced = [s.model_dump(mode="json") for s in decision.silenced]
        report.notes = decision.notes
        self._remember_roots(decision.state.outbox)

    def _remember_roots(self, outbox: list[Delivery]) -> None:
        alerts = [d for d in outbox if d.kind == "alert" and d.notifier in self.by_name
                  and self.by_name[d.notifier].threaded]
        self._roots = {(d.notifier, d.incident_id): d.receipt for d in alerts
                       if d.status == SENT and d.receipt}
        self._roots_lost = {(d.notifier, d.incident_id) for d in alerts
                            if d.status in (UNKNOWN, FAILED)}

    def deliver(self) -> Report:
        """Send what waits in the outbox now, deciding nothing (a person's action, such as
        ``incident ack``, enqueued it); never raises, as ``post``."""
        started = time.monotonic()
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        report = Report(self.env.name, self.store.where, self.run_id, decided=True)
        try:
            self._remember_roots(self.store.peek(self.env.name).outbox)
            self._drain(report, started)
        except StoreError as exc:
            report.error = self.redactor.text(str(exc))
        except Exception as exc:  # reported, not raised
            report.error = self.redactor.text(_unexpected(exc))
        finally:
            self.store.close()
        report.duration_s = round(time.monotonic() - started, 3)
        return report

    # ---- delivering ---------------------------------------------------------------------
    def _drain(self, report: Report, started: float) -> None:
        def remaining() -> float:
            return self.budget - (time.monotonic() - started)

        claimant = claimant_id(self.run_id)
        # (incident, notifier) -> why its later deliveries wait: an earlier one is not final.
        waiting: dict[tuple[str, str], str] = {}
        # notifier -> why none of its deliveries goes out in this run (down, rate limited).
        held: dict[str, str] = {}
        for d in self.store.deliveries(self.env.name, [PENDING, SENDING]):
            pair = (d.incident_id, d.notifier)
            if d.status == SENDING:  # another runner's, in flight (or a dead one's lease)
                waiting.setdefault(pair, f"an earlier {d.notifier} {d.kind} of this incident "
                                         "is being sent by another runner")
                continue
            notifier = self.by_name.get(d.notifier)
            result = Result(d.id, d.incident_key, d.kind, d.notifier, d.headline, PENDING,
                            d.attempts, not_before=d.not_before)
            if notifier is None:
                result.status, result.error = "skipped", (
                    f"{d.notifier} is no longer configured ([notify.{d.notifier}])")
            elif pair in waiting:
                result.status, result.error = "skipped", f"kept in order: {waiting[pair]}"
            elif d.notifier in held:
                result.status, result.error = "skipped", held[d.notifier]
            elif d.not_before and at(d.not_before) > self.clock():
                result.status, result.error = "skipped", (
                    f"{d.notifier} asked us to wait (rate limited) until {d.not_before}")
                held[d.notifier] = result.error
            elif remaining() < MIN_REQUEST_S:
                result.status, result.error = "skipped", (
                    f"the posting budget ({self.budget:g} s) is spent; the next run sends it")
            elif notifier.threaded and d.kind != "alert" and \
                    (d.notifier, d.incident_id) not in self._roots:
                where = "ticket" if d.notifier == "ticket" else f"{d.notifier} thread"
                if (d.notifier, d.incident_id) not in self._roots_lost:
                    result.status, result.error = "skipped", (
                        f"the incident's {where} is not created yet")
                elif self.store.claim(self.env.name, d.id, claimant, self._now()):
                    # Its alert is unknown or given up: nowhere to put this.
                    result.status = FAILED
                    result.error = f"the incident's {where} was never recorded as created"
                    self.store.finish(self.env.name, d.id, claimant, FAILED, now=self._now(),
                                      attempts=d.attempts, error=result.error)
                else:
                    self._claimed_elsewhere(d, waiting)
                    continue
            elif not self.store.claim(self.env.name, d.id, claimant, self._now()):
                self._claimed_elsewhere(d, waiting)
                continue
            else:
                self._send(notifier, d, result, remaining, claimant)
                if result.status == PENDING:
                    # Not delivered: the service is down or limiting us; its queue keeps
                    # its order, and the budget goes to the other notifiers.
                    held[d.notifier] = (f"an earlier delivery to {d.notifier} failed in this "
                                        "run; kept in order")
            if result.status not in FINISHED:
                waiting.setdefault(pair, f"its {d.kind} to {d.notifier} is not sent yet")
            report.results.append(result)

    def _claimed_elsewhere(self, d: Delivery, waiting: dict[tuple[str, str], str]) -> None:
        """Another runner claimed it first: its later ones wait, unless it is already done."""
        now = self.store.delivery(self.env.name, d.id)
        if now is None or now.status not in FINISHED:
            waiting.setdefault((d.incident_id, d.notifier),
                               f"an earlier {d.notifier} {d.kind} of this incident is being "
                               "sent by another runner")

    def _now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    def _send(self, notifier: Notifier, d: Delivery, result: Result,
              remaining: Callable[[], float], claimant: str) -> None:
        """One delivery: tried within this run's budget, its fate decided, then recorded."""
        tries = self._try(notifier, d, result, remaining)
        not_before = self._settle(notifier, d, result, tries)
        self._record(notifier, d, result, claimant, not_before)

    def _try(self, notifier: Notifier, d: Delivery, result: Result,
             remaining: Callable[[], float]) -> _Tries:
        """Send ``d`` until it is delivered, refused for good, possibly delivered where a
        resend could post twice, or out of retries or budget (backing off between tries)."""
        tries = _Tries(attempts=d.attempts)
        while True:
            if min(self.deadline, remaining()) < MIN_REQUEST_S:
                tries.error = tries.error or f"the posting budget ({self.budget:g} s) is spent"
                return tries
            result.tries += 1
            tries.attempts += 1
            budget = RequestBudget(self.deadline, time.monotonic() + remaining())
            finished, value = _bounded(
                partial(notifier.send, self._outgoing(d, tries.attempts - 1), budget),
                remaining())
            if not finished:
                tries.maybe_delivered = True
                tries.error = (f"no answer within the posting budget ({self.budget:g} s); it "
                               "may still arrive")
                return tries
            if not isinstance(value, BaseException):
                tries.receipt = value
                return tries
            if not isinstance(value, DeliveryError):
                tries.error = f"{type(value).__name__} in the {notifier.name} notifier"
                return tries
            tries.error, tries.wait = value.reason, None
            if value.permanent:
                tries.refused, result.fix = True, value.fix
                return tries
            if value.maybe_delivered:
                tries.maybe_delivered = True
                if d.kind not in notifier.idempotent:
                    return tries  # resending now could post twice
            pause = BACKOFF_S[min(result.tries - 1, len(BACKOFF_S) - 1)]
            if value.retry_after is not None:
                # The service said how long: never sooner, and if not within this run's
                # budget, the next run waits for it.
                pause = max(pause, value.retry_after)
                tries.wait = value.retry_after
            if result.tries > self.retries or remaining() - pause < MIN_REQUEST_S:
                return tries
            time.sleep(pause)
            tries.wait = None

    def _settle(self, notifier: Notifier, d: Delivery, result: Result,
                tries: _Tries) -> str | None:
        """The delivery's status, answer and error from its tries; returns when a pending
        one may be sent again, where the service asked for a wait this run could not give."""
        result.attempts = tries.attempts
        error = tries.error
        not_before: str | None = None
        if tries.receipt is not None:
            result.status, result.receipt = SENT, self.redactor.data(tries.receipt.detail)
            result.answer = "delivered"
        elif tries.refused:
            result.status, result.answer = FAILED, "refused"
        elif tries.maybe_delivered and not (d.kind in notifier.idempotent
                                            or d.kind in notifier.recoverable):
            result.status, result.answer = UNKNOWN, "maybe-delivered"
            error = (f"{error}: not resent, so nobody is notified twice — check "
                     f"{notifier.name} by hand")
        else:
            result.status = PENDING if tries.attempts < MAX_ATTEMPTS else FAILED
            result.answer = "maybe-delivered" if tries.maybe_delivered else "retry"
            if tries.wait is not None and result.status == PENDING:
                not_before = (self.clock() + timedelta(seconds=tries.wait)).isoformat(
                    timespec="seconds")
                result.not_before = not_before
        result.error = self.redactor.text(error) if error else None
        return not_before

    def _record(self, notifier: Notifier, d: Delivery, result: Result, claimant: str,
                not_before: str | None) -> None:
        """The delivery's fate in the store, under our claim (a lost claim is reported as the
        store has it); a threaded notifier's alert becomes its incident's thread root."""
        recorded = self.store.finish(self.env.name, d.id, claimant, result.status,
                                     now=self._now(), attempts=result.attempts,
                                     error=result.error, receipt=result.receipt,
                                     not_before=not_before)
        if not recorded:
            self._lost_claim(d, result)
        elif result.status == SENT and notifier.threaded and d.kind == "alert":
            self._roots[(d.notifier, d.incident_id)] = result.receipt

    def _lost_claim(self, d: Delivery, result: Result) -> None:
        """Our claim was settled by another runner while we sent (our lease ran out): what
        the store says now is the truth, and the terminal says that, not what we saw."""
        now = self.store.delivery(self.env.name, d.id)
        recorded = now.status if now is not None else "removed"
        seen = result.status
        result.status = UNKNOWN if seen == SENT or recorded == UNKNOWN else recorded
        result.error = (f"this run saw '{seen}'"
                        + (f" ({result.error})" if result.error else "")
                        + f", but another runner had already settled the delivery as "
                          f"'{recorded}' (our claim outlived its lease): check "
                          f"{d.notifier} by hand")

    def _outgoing(self, d: Delivery, attempt: int) -> Outgoing:
        m = d.payload["message"]
        return Outgoing(
            delivery_id=d.id, kind=d.kind, environment=d.environment, dedup_key=d.dedup_key,
            message=Message(m["kind"], m["key"], m["severity"], list(m["lines"]),
                            list(m["details"])),
            summary=d.payload["summary"], incident=d.payload["incident"],
            root=self._roots.get((d.notifier, d.incident_id)), attempt=attempt)

    def write(self, report: Report) -> Path:
        path = write_json(self.reports_dir / POSTING_FILE, self.redactor.data(report.to_dict()))
        report.written = str(path)
        return path


def cancelled_by_resolutions(outbox: list[Delivery], new: list[Delivery],
                             notifiers: Mapping[str, Notifier]) -> list[StatusChange]:
    """What a resolution makes pointless while it waits unsent, for notifiers that say so
    (PagerDuty: a trigger sent after its occurrence's resolve opens an alert that nothing
    closes). Only ``pending`` ones: one being sent is waited for, and the resolve after it."""
    resolved = {(d.incident_id, d.notifier) for d in new if d.kind == "resolved"}
    changes = []
    for queued in outbox:
        notifier = notifiers.get(queued.notifier)
        if (notifier is not None and queued.status == PENDING
                and (queued.incident_id, queued.notifier) in resolved
                and queued.kind in notifier.cancelled_by_resolution):
            queued.status = SUPERSEDED
            changes.append(StatusChange(queued.id, SUPERSEDED,
                                        "its incident resolved before it was sent",
                                        expected=PENDING))
    return changes


def _unexpected(exc: BaseException) -> str:
    """An exception we did not expect, in one line a maintainer can find: its type, its
    text and where it was raised (file:line of the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


def _bounded(call: Callable[[], Any], limit: float) -> tuple[bool, Any]:
    """Run ``call`` on a daemon thread for at most ``limit`` seconds: (finished, its value
    or the exception it raised). A call that overruns is left behind; the process does not
    wait for it at exit (probes.deadline, the one way a call runs under a deadline)."""
    return within(call, limit, "unibazzar-post")


def _message_lines(decision: Decision, redactor: Redactor) -> list[str]:
    """The messages a dry run would post, once each (not once per notifier)."""
    lines, seen = [], set()
    for d in decision.deliveries:
        key = (d.incident_id, d.kind)
        if key in seen:
            continue
        seen.add(key)
        lines.append("")
        lines.extend(redactor.text(line) for line in d.payload["message"]["lines"])
    return lines
