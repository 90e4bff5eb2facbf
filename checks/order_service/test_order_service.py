"""order-service — payment failures, order processing delays, saga timeouts."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.runbook import (
    CheckContext,
    Finding,
    NotConfigured,
    failures_among,
    gather,
    runbook_check,
)
from unibazzar_health.probes import FailureKind, ProbeFailure, connection_failure

if TYPE_CHECKING:
    from unibazzar_health.probes.payments import PaymentIntent, ProviderTarget
    from unibazzar_health.probes.postgresql import PostgresTarget

TERMINAL_SAGA_STATES = ("completed", "compensated", "failed")


# ---- 1. Check payment provider webhooks ---------------------------------------------------
def observe_payment_webhooks(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import payments

    spec = ctx.require("payments", ctx.env.spec.payments)
    provider_target = ctx.payment_provider()
    webhook_secret = ctx.env.secret(spec.webhook_secret_env) or ""
    canary = payments.canary_event()
    stale = int(time.time()) - 3600

    def deliver(signature: str) -> Callable[[], int]:
        return lambda: payments.deliver(spec.webhook_url, canary, signature,
                                        ctx.env.deadline("http"))

    # All at once: a dead provider or receiver costs one deadline, not five.
    seen = gather(
        provider=lambda: payments.provider_state(provider_target),
        correctly_signed=deliver(payments.sign(canary, webhook_secret)),
        badly_signed=deliver(payments.sign(canary, "whsec_not_our_secret")),
        stale_timestamp=deliver(payments.sign(canary, webhook_secret, stale)),
    )
    provider = seen["provider"]
    if isinstance(provider, ProbeFailure):
        seen["our_endpoint"] = None
    else:
        ours = [e for e in provider.endpoints if e.url == spec.webhook_url]
        seen["our_endpoint"] = ours[0] if ours else None
    seen["webhook_url"] = spec.webhook_url
    return seen


@runbook_check("order.payment-provider-webhooks", observe=observe_payment_webhooks)
def test_step1_payment_provider_webhooks(observed: dict[str, Any]) -> None:
    provider = observed["provider"]
    failures = failures_among(*observed.values())
    if failures:
        raise Finding.of(failures)
    receiver = {k: observed[k] for k in ("correctly_signed", "badly_signed", "stale_timestamp")}
    accepted_forgeries = [k for k in ("badly_signed", "stale_timestamp")
                          if 200 <= receiver[k] < 300]
    if accepted_forgeries:
        # A receiver to fix (and the orders it marked paid to audit), not provider state to
        # reconcile: the mode's fixes.
        raise Finding(f"our webhook receiver accepts {' and '.join(accepted_forgeries)} events "
                      f"at {observed['webhook_url']}", impact="security",
                      mode="forged-webhook-accepted")
    if not provider.key_accepted:
        raise Finding(f"payment provider rejects our API key: HTTP {provider.events_status}",
                      mode="api-key-rejected")
    if provider.endpoints_status in (401, 403):
        raise Finding(f"cannot list webhook endpoints at the provider: HTTP "
                      f"{provider.endpoints_status} (does our key have read access to Webhook "
                      "Endpoints?)", mode="api-key-rejected")
    assert provider.endpoints_status == 200, (
        f"cannot list webhook endpoints at the provider: HTTP {provider.endpoints_status}")
    endpoint = observed["our_endpoint"]
    if endpoint is None:
        raise Finding(f"no webhook endpoint registered at the provider for "
                      f"{observed['webhook_url']}", mode="webhook-endpoint-off")
    if endpoint.status != "enabled":
        raise Finding(f"our webhook endpoint {endpoint.id} is {endpoint.status}",
                      mode="webhook-endpoint-off")
    status = receiver["correctly_signed"]
    if not 200 <= status < 300:
        # A refusal of an event signed with the provider's secret is a signature check that
        # fails every real event: order-service's signing secret is not the provider's.
        kind = (FailureKind.AUTH_REJECTED if status in (400, 401, 403)
                else FailureKind.MISSING_OBJECT if status == 404
                else FailureKind.UNEXPECTED_ANSWER)
        refused = ProbeFailure("order-service", observed["webhook_url"], kind,
                               f"rejects a correctly signed event: HTTP {status}")
        secret = (" (its webhook signing secret does not match the provider's)"
                  if kind is FailureKind.AUTH_REJECTED else "")
        raise Finding(f"our webhook receiver rejects a correctly signed event: HTTP "
                      f"{status}{secret}", failures=(refused,))


# ---- 2. Review saga orchestration logs ----------------------------------------------------
# Failed sagas are terminal (nothing will move them) but not done: the runbook's "Retry
# failed saga steps" is for them. Those of the last day are listed beside the stuck ones.
FAILED_SAGAS_HOURS = 24
# At most this far back for the stuck sagas' log lines, however long they have been stuck.
SAGA_LOGS_MAX_S = 6 * 3600


def observe_sagas(ctx: CheckContext) -> dict[str, Any]:
    from unibazzar_health.probes import postgresql

    minutes = ctx.env.spec.thresholds.saga_timeout_minutes
    database = ctx.postgres("orders")
    columns = "id, order_id, state, step, round(extract(epoch FROM now() - updated_at))"

    def sagas(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        return [{"saga": r[0], "order": r[1], "state": r[2], "step": r[3], "idle_s": int(r[4])}
                for r in rows]

    # One after the other: a database that does not answer costs one deadline, not two.
    stuck = sagas(postgresql.fetch(
        database, f"SELECT {columns} FROM sagas WHERE state <> ALL(%s) AND updated_at < "
                  "now() - %s * interval '1 minute' ORDER BY updated_at LIMIT 50",
        (list(TERMINAL_SAGA_STATES), minutes)))
    failed = sagas(postgresql.fetch(
        database, f"SELECT {columns} FROM sagas WHERE state = 'failed' AND updated_at > "
                  "now() - %s * interval '1 hour' ORDER BY updated_at DESC LIMIT 50",
        (FAILED_SAGAS_HOURS,)))
    seen: dict[str, Any] = {"timeout_minutes": minutes, "stuck": stuck,
                            "failed_last_day": failed}
    if stuck and ctx.env.spec.kubernetes is not None:
        seen["logs"] = _saga_log_lines(ctx, stuck)
    return seen


def _saga_log_lines(ctx: CheckContext, stuck: list[dict[str, Any]]) -> Any:
    """order-service's log lines naming a stuck saga or its order, since the oldest of them
    last moved (the runbook's "Review saga orchestration logs"): evidence, never judged, so
    a cluster that cannot be read leaves its reason here and fails nothing."""
    from unibazzar_health.probes import ProbeError, kubernetes

    since = _logs_since_s(stuck)
    ids = _saga_ids(stuck)
    try:
        logs = kubernetes.pod_logs(ctx.kube(), ctx.deployment("order-service"),
                                   since_seconds=since, tail_lines=5000)
    except ProbeError as exc:
        return {"not_read": str(exc)}
    return {"since_s": since,
            "lines": [f"{pod}: {line}" for pod, text in sorted(logs.items())
                      for line in text.splitlines() if any(i in line for i in ids)][-50:]}


def _logs_since_s(stuck: list[dict[str, Any]]) -> int:
    """Since the oldest stuck saga last moved, in whole minutes, a minute more (at most
    SAGA_LOGS_MAX_S): the window its logs are read over, as kubectl's --since says it."""
    return min(SAGA_LOGS_MAX_S, (max(s["idle_s"] for s in stuck) // 60 + 2) * 60)


def _saga_ids(stuck: list[dict[str, Any]]) -> list[str]:
    """The stuck sagas' ids and their orders', as their log lines may name either."""
    return list(dict.fromkeys([s["saga"] for s in stuck]
                              + [s["order"] for s in stuck if s["order"]]))


# What grep -E reads as an operator: escaped, so an id matches as written.
_ERE_SPECIAL = re.compile(r"([.\[\]()*+?{}|^$\\])")


def _saga_names(stuck: list[dict[str, Any]]) -> dict[str, str]:
    """What the catalog's saga commands need of this finding: the sagas' ids, quoted for
    the retry loop; the ids and their orders' as one grep pattern for the logs; and the
    logs' window."""
    return {"saga_ids": " ".join(shlex.quote(s["saga"]) for s in stuck),
            "saga_ids_pattern": shlex.quote("|".join(_ERE_SPECIAL.sub(r"\\\1", i)
                                                     for i in _saga_ids(stuck))),
            "saga_logs_window": f"{_logs_since_s(stuck) // 60}m"}


@runbook_check("order.saga-orchestration", observe=observe_sagas)
def test_step2_saga_orchestration(observed: dict[str, Any]) -> None:
    stuck = observed["stuck"]
    if not stuck:
        return
    failed = observed.get("failed_last_day") or []
    logs = observed.get("logs")
    lines = (logs or {}).get("lines")
    raise Finding(
        f"{len(stuck)} saga(s) stuck past {observed['timeout_minutes']:g} min: "
        + ", ".join(f"{s['saga']} ({s['state']}/{s['step']}, order {s['order']}, idle "
                    f"{s['idle_s'] // 60} min)" for s in stuck[:10])
        + (f"; {len(failed)} failed in the last {FAILED_SAGAS_HOURS} h: "
           + ", ".join(f"{s['saga']} ({s['step']}, {s['idle_s'] // 60} min ago)"
                       for s in failed[:10]) if failed else "")
        + (f"; {len(lines)} order-service log line(s) name them" if lines else ""),
        names=_saga_names(stuck))


# ---- 3. Verify database transaction health ------------------------------------------------
def observe_transactions(ctx: CheckContext) -> dict[str, Any]:
    limits = ctx.env.spec.thresholds
    seen = ctx.database_activity("orders")
    in_transaction = [{"pid": s.pid, "state": s.state, "age_s": s.transaction_age_s,
                       "blocked_by": list(s.blocked_by), "query": s.query}
                      for s in seen.sessions if s.transaction_age_s is not None]
    waits = {s.pid: s.query_age_s for s in seen.sessions}
    return {
        # "idle in transaction (aborted)" too: a failed transaction nobody rolled back.
        "idle_in_transaction": [s for s in in_transaction
                                if s["state"].startswith("idle in transaction")
                                and s["age_s"] >= limits.idle_in_transaction_seconds],
        "long_transactions": [s for s in in_transaction if s["state"] == "active"
                              and s["age_s"] >= limits.long_query_seconds],
        # Blocked for as long as its current statement has waited.
        "blocked": [s for s in in_transaction if s["blocked_by"]
                    and waits[s["pid"]] >= limits.lock_wait_seconds],
        # A counter since the statistics were reset: evidence, not judged (no baseline).
        "deadlocks_total": seen.deadlocks,
    }


@runbook_check("order.database-transaction-health", observe=observe_transactions)
def test_step3_database_transaction_health(observed: dict[str, Any],
                                           thresholds: Thresholds) -> None:
    problems = []
    for key, label in (("idle_in_transaction", "idle in transaction"),
                       ("long_transactions", "long-running transaction"),
                       ("blocked", "blocked by locks")):
        if observed[key]:
            pids = ", ".join(f"pid {s['pid']} ({s['age_s']} s)" for s in observed[key][:10])
            problems.append(f"{len(observed[key])} {label}: {pids}")
    assert not problems, "orders database: " + "; ".join(problems)


# ---- 4. Check downstream service dependencies ---------------------------------------------
DOWNSTREAM = ("auth-service", "listing-service", "payments", "rabbitmq")


def observe_downstream(ctx: CheckContext) -> dict[str, Any]:
    """Each downstream dependency twice: as order-service sees it (its dependencies
    endpoint, if the environment names one) and as we see it from here. The difference
    tells a dead dependency from a broken path between order-service and it."""
    from unibazzar_health.probes import http, payments, rabbitmq

    deadline = ctx.env.deadline("http")
    ours: dict[str, Callable[[], Any]] = {}
    targets: dict[str, str] = {}  # where each was probed from here
    for service in ("auth-service", "listing-service"):
        spec = ctx.env.spec.service(service)
        if spec is not None:
            url = targets[service] = ctx.service_url(service, spec.health_path)
            ours[service] = lambda s=service, u=url: http.request(s, "GET", u, deadline).status
    if ctx.env.spec.payments is not None:
        provider = ctx.payment_provider()
        targets["payments"] = provider.api_url
        ours["payments"] = lambda: payments.provider_state(provider).key_accepted
    if ctx.env.spec.rabbitmq is not None:
        broker = ctx.broker()
        targets["rabbitmq"] = broker.where
        ours["rabbitmq"] = lambda: rabbitmq.reachable(broker)
    order = ctx.env.spec.service("order-service")
    if order is not None and order.dependencies_path:
        url = ctx.service_url("order-service", order.dependencies_path)
        ours["order-service's view"] = lambda: http.request(
            "order-service", "GET", url, deadline)
    if not ours:
        # Nothing to compare: passing would claim dependencies nobody looked at.
        raise NotConfigured("services.order-service.dependencies_path, or any of "
                            + ", ".join(DOWNSTREAM))
    seen = gather(**ours)
    view = seen.pop("order-service's view", None)
    return {"from_here": seen, "from_order_service": view, "targets": targets}


def _down_from_here(name: str, answer: Any, target: str) -> ProbeFailure | None:
    """How a dependency probed from here failed, if it did."""
    if isinstance(answer, ProbeFailure):
        return answer
    if answer is False:
        return ProbeFailure(name, target, FailureKind.AUTH_REJECTED,
                            "the provider refused our API key")
    if isinstance(answer, int) and not isinstance(answer, bool) and answer >= 400:
        return ProbeFailure(name, target, FailureKind.UNEXPECTED_ANSWER,
                            f"health endpoint answered HTTP {answer}")
    return None


@runbook_check("order.downstream-dependencies", observe=observe_downstream)
def test_step4_downstream_service_dependencies(observed: dict[str, Any]) -> None:
    from unibazzar_health.probes.http import HttpAnswer

    targets = observed["targets"]
    here = {name: _down_from_here(name, answer, targets.get(name, name))
            for name, answer in observed["from_here"].items()}
    view = observed["from_order_service"]
    theirs: dict[str, str | None] = {}
    problems = []
    if isinstance(view, ProbeFailure):
        problems.append(f"order-service's dependencies endpoint: {view.message}")
    elif isinstance(view, HttpAnswer):
        if view.status != 200 or not isinstance(view.body, dict):
            problems.append(f"order-service's dependencies endpoint answered HTTP {view.status}")
        else:
            theirs = {name: None if (state or {}).get("ok") else
                      str((state or {}).get("error") or "not ok")
                      for name, state in view.body.items() if name in DOWNSTREAM}
    failures: list[ProbeFailure] = []
    for name in DOWNSTREAM:
        from_here, from_order = here.get(name), theirs.get(name)
        if from_here and (from_order or name not in theirs):
            problems.append(f"{name} is down: {from_here.message}")
        elif from_here:
            problems.append(f"{name}: order-service reaches it, we do not: {from_here.message}")
        elif from_order:
            problems.append(f"order-service cannot reach {name} ({from_order}), though it "
                            "answers from here: the path between them is broken")
            # Its kind as far as order-service's words tell (its client's error, by name or
            # text), aimed where we do reach it from here.
            failures.append(ProbeFailure(name, targets.get(name, name),
                                         connection_failure(from_order),
                                         f"order-service cannot reach it: {from_order}"))
        if from_here:
            failures.append(from_here)
    if isinstance(view, ProbeFailure):
        failures.append(view)
    if problems:
        impact = "payments" if any(f.backend == "payments" for f in failures) else None
        raise Finding("; ".join(problems), impact=impact, failures=failures)


# ---- Reconciliation: orders paid in the database vs the provider's payments -----------------
PROVIDER_PAGE = 100  # the provider's newest payments, one page
MAX_LOOKUPS = 5  # paid orders whose payment is not on that page, looked up one by one


def observe_reconciliation(ctx: CheckContext) -> dict[str, Any]:
    """Both ways, over the time the provider's newest page covers (and at most the window):
    older orders are not judged rather than judged on missing data. Each mismatch is sorted
    by what it is: ``loss`` (money taken with no order for it, or taken twice) or
    ``payment_issues`` (the two sides disagree about an order that can be put right)."""
    from unibazzar_health.probes import payments, postgresql

    limits = ctx.env.spec.thresholds
    database, provider = ctx.postgres("orders"), ctx.payment_provider()
    now = time.time()
    window_start = now - limits.reconcile_window_minutes * 60
    seen = gather(
        orders=lambda: postgresql.fetch(
            database,
            "SELECT id, status, payment_intent_id, amount_cents, "
            "extract(epoch FROM updated_at) FROM orders WHERE payment_intent_id IS NOT NULL "
            "AND updated_at > to_timestamp(%s) ORDER BY updated_at DESC LIMIT 200",
            (window_start,)),
        intents=lambda: payments.recent_payment_intents(provider, PROVIDER_PAGE),
    )
    unreachable = {name: v for name, v in seen.items() if isinstance(v, ProbeFailure)}
    if unreachable:
        return {"unreachable": unreachable}
    page = seen["intents"]
    covered_from = (max(window_start, min(i.created for i in page))
                    if len(page) >= PROVIDER_PAGE else window_start)
    issues, not_judged = paid_orders_the_provider_disagrees_with(
        provider, seen["orders"], page, covered_from)
    # Stripe gives no success time: the grace runs from the payment's creation.
    grace_start = now - limits.reconcile_grace_minutes * 60
    loss, unsettled = payments_their_orders_disagree_with(database, page, covered_from,
                                                          grace_start, now)
    return {"orders_checked": len(seen["orders"]) - not_judged, "not_judged": not_judged,
            "payments_checked": len(page), "loss": loss, "payment_issues": issues + unsettled}


def paid_orders_the_provider_disagrees_with(
        provider: ProviderTarget, orders: list[tuple[Any, ...]], page: list[PaymentIntent],
        covered_from: float) -> tuple[list[str], int]:
    """The database says paid: the provider must have taken that payment. Paid in our books,
    not (or not this much) at the provider, the order is what is wrong, and it can be put
    right: (those mismatches, the orders not judged: older than the page covers, or past
    MAX_LOOKUPS of payments not on it)."""
    from unibazzar_health.probes import payments

    intents = {i.id: i for i in page}
    issues: list[str] = []
    lookups, not_judged = 0, 0
    for order_id, status, intent_id, amount, updated in orders:
        if status != "paid":
            continue
        if float(updated) < covered_from:
            not_judged += 1
            continue
        intent = intents.get(intent_id)
        if intent is None:
            if lookups >= MAX_LOOKUPS:
                not_judged += 1
                continue
            lookups += 1
            intent = payments.payment_intent(provider, intent_id)
        if intent is None:
            issues.append(f"order {order_id} is paid in the database, but the provider "
                          f"has no payment {intent_id}")
        elif intent.status != "succeeded":
            issues.append(f"order {order_id} is paid in the database, but its payment "
                          f"{intent_id} is {intent.status}")
        elif intent.amount != amount:
            issues.append(f"order {order_id} is {amount} cents, its payment {intent_id} "
                          f"{intent.amount}")
    return issues, not_judged


def payments_their_orders_disagree_with(
        database: PostgresTarget, page: list[PaymentIntent], covered_from: float,
        grace_start: float, now: float) -> tuple[list[str], list[str]]:
    """The provider took a payment (created between ``covered_from`` and ``grace_start``,
    so its webhook had time to land; refunded in full, it took nothing): its order must say
    so. (Money lost: charged twice, or for no order; mismatches that can be put right: an
    order that exists but is not paid, a lost webhook.)"""
    from unibazzar_health.probes import postgresql

    taken: dict[str, list[PaymentIntent]] = {}
    for i in page:
        if (i.status == "succeeded" and i.order_id and i.amount_refunded < i.amount
                and covered_from <= i.created <= grace_start):
            taken.setdefault(i.order_id, []).append(i)
    loss: list[str] = []
    issues: list[str] = []
    if not taken:
        return loss, issues
    rows = postgresql.fetch(database, "SELECT id, status FROM orders WHERE id = ANY(%s)",
                            (sorted(taken),))
    statuses = {row[0]: row[1] for row in rows}
    for order_id, charges in sorted(taken.items()):
        charges.sort(key=lambda i: (i.created, i.id))
        state = f"is {statuses[order_id]!r}" if order_id in statuses else "does not exist"
        if len(charges) > 1:
            # Money taken twice, whatever the order says.
            loss.append(f"order {order_id} was charged {len(charges)} times: payments "
                        f"{', '.join(i.id for i in charges)} succeeded"
                        + ("" if statuses.get(order_id) == "paid"
                           else f", and the order {state} in the orders database"))
        elif statuses.get(order_id) != "paid":
            [intent] = charges
            words = (f"payment {intent.id} (created {(now - intent.created) / 60:.0f} min "
                     f"ago) succeeded for order {order_id}, which {state} in the orders "
                     "database")
            # No order: the customer was charged for nothing. An order that exists but is
            # not paid is a lost webhook: the order can still be put right.
            (issues if order_id in statuses else loss).append(words)
    return loss, issues


@runbook_check("order.payment-reconciliation", observe=observe_reconciliation)
def test_orders_and_payments_reconcile(observed: dict[str, Any]) -> None:
    unreachable = observed.get("unreachable")
    if unreachable:
        # Not a mismatch: nothing could be compared. The class is the lost dependency's.
        failures = list(unreachable.values())
        raise Finding.of(failures, "cannot reconcile: ",
                         impact=("payments" if any(f.backend == "payments" for f in failures)
                                 else "degradation"))
    loss, issues = observed["loss"], observed["payment_issues"]
    if loss or issues:
        # The runbook: a payment processing issue is SEV2; money lost is data loss, SEV1.
        # Lost money first: it is what the reader must act on.
        mismatches = loss + issues
        lost = f" ({len(loss)} with money lost)" if loss else ""
        raise Finding(f"{len(mismatches)} order(s) disagree with the payment provider{lost}: "
                      + "; ".join(mismatches[:10]),
                      impact="data" if loss else "payments")
