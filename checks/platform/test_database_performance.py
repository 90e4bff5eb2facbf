"""Investigation — review database performance and connections: each service's PostgreSQL
database has connections to spare, no query running past its threshold, no session waiting
on a lock past its threshold."""

from __future__ import annotations

from collections.abc import Callable

from unibazzar_health.config.names import BACKENDS_BY_NAME
from unibazzar_health.config.platform import Thresholds
from unibazzar_health.judges.runbook import CheckContext, Finding, per_service
from unibazzar_health.probes.postgresql import Activity, Session

# Each service's [postgresql.NAME] database, as config/names.py declares it.
DATABASES = {service: name for service, name
             in BACKENDS_BY_NAME["postgresql"].used_by.items() if name}


def observe_database(name: str) -> Callable[[CheckContext], Activity]:
    def observe(ctx: CheckContext) -> Activity:
        return ctx.database_activity(name)

    return observe


def describe(session: Session, age_s: int) -> str:
    blocked = (f", blocked by pid {', '.join(map(str, session.blocked_by))}"
               if session.blocked_by else "")
    return f"pid {session.pid} ({age_s} s{blocked}: {session.query[:60]})"


@per_service("database-performance", lambda service: observe_database(DATABASES[service]),
             DATABASES)
def test_review_database_performance_and_connections(service: str, observed: Activity,
                                                      thresholds: Thresholds) -> None:
    database = DATABASES[service]
    waiting = [s for s in observed.sessions
               if s.waiting_on_lock and s.query_age_s >= thresholds.lock_wait_seconds]
    long_running = [s for s in observed.sessions
                    if s.state == "active" and s.query_age_s >= thresholds.long_query_seconds]
    problems = []
    if observed.connection_usage >= thresholds.db_connection_usage:
        problems.append(f"connections {observed.connections}/{observed.max_connections} "
                        f"({observed.connection_usage:.0%} >= "
                        f"{thresholds.db_connection_usage:.0%})")
    if waiting:
        problems.append(f"{len(waiting)} session(s) waiting on a lock >= "
                        f"{thresholds.lock_wait_seconds:g} s: "
                        + ", ".join(describe(s, s.query_age_s) for s in waiting[:5]))
    if long_running:
        problems.append(f"{len(long_running)} query(ies) running >= "
                        f"{thresholds.long_query_seconds:g} s: "
                        + ", ".join(describe(s, s.query_age_s) for s in long_running[:5]))
    if problems:
        raise Finding(f"{database} database: " + "; ".join(problems), impact="degradation")
