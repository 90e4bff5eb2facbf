"""The checker's own faults are not the platform's, and the verdict never hides a failure
(issue 15, item 5): a credential of the checks' own refused is their configuration, not an
outage; a symptom of a failed backend is told to bring the backend back first; the Impact
line says each thing once and only what the evidence supports; the command line never moves
pytest's rootdir, never lets a failed test exit 0, and says what is wrong before any probe;
the run mode comes from explicit signals. With pytester (serial and -n 2) where the plugin
decides, with the sandbox where a real backend is needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from unibazzar_health.config.redaction import Redactor
from unibazzar_health.judges.runbook import Finding
from unibazzar_health.probes import FailureKind, ProbeError, ProbeFailure
from unibazzar_health.reports import messages
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.model import Check, Summary
from unibazzar_health.verdict.policy import now
from unibazzar_health.verdict.results import (
    OWN_CREDENTIAL_BACKENDS,
    CheckResult,
    Outcome,
    build_result,
    dependency_of,
)
from unibazzar_health.verdict.summary import RunInfo, build_summary, render

from conftest import (
    GAME_DAY_OBSERVERS,
    ROOT,
    run_checks,
    sandbox,
    sandbox_logs_kept,
)

CATALOG = load_catalog()
MODES = pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]],
                                ids=["serial", "xdist"])


def run(pytester: pytest.Pytester, *args: str,
        reports: Path | None = None) -> tuple[pytest.RunResult, dict[str, Any]]:
    reports = reports or pytester.path / "reports"
    result = pytester.runpytest_subprocess("--env-file=env.toml", f"--reports-dir={reports}",
                                           *args)
    path = reports / "summary.json"
    return result, (json.loads(path.read_text()) if path.exists() else {})


def by_id(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in summary["checks"]}


# ---- 1. A credential of the checks' own refused ---------------------------------------------
REFUSED = '''
from unibazzar_health.probes import FailureKind, ProbeError, ProbeFailure
from unibazzar_health.judges.runbook import Finding, runbook_check


def refused(backend, target, problem):
    def observe(ctx):
        raise ProbeError(backend, target, problem, 1.0, kind=FailureKind.AUTH_REJECTED)
    return observe


def fine(ctx):
    return {}


DB = 'connection failed: FATAL:  password authentication failed for user "unibazzar_health"'


@runbook_check("auth.postgresql-connectivity",
               observe=refused("postgresql", "db.internal:5432/auth", DB))
def test_auth_db(observed):
    pass


@runbook_check("order.database-transaction-health",
               observe=refused("postgresql", "db.internal:5432/orders", DB))
def test_order_db(observed):
    pass


@runbook_check("ai.redis-cache-performance",
               observe=refused("redis", "cache.internal:6379/1",
                               "AuthenticationError: invalid username-password pair"))
def test_redis(observed):
    pass


@runbook_check("auth.recent-deployments",
               observe=refused("kubernetes", "https://k8s.internal:6443",
                               "HTTP 401 Unauthorized"))
def test_cluster(observed):
    pass


@runbook_check("listing.related-systems", observe=fine)
def test_listing_dependencies(observed):
    raise Finding.of([ProbeFailure("redis", "cache.internal:6379/0", FailureKind.AUTH_REJECTED,
                                   "WRONGPASS", 1.0),
                      ProbeFailure("s3", "bucket images", FailureKind.AUTH_REJECTED,
                                   "InvalidAccessKeyId: unknown key", 1.0)],
                     "listing-service cannot reach: ")


@runbook_check("auth.jwt-secret-configuration", observe=fine)
def test_canary_logs_in(observed):
    pass
'''


@pytest.fixture
def refused_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "credentials"\n')
    pytester.makepyfile(test_checks=REFUSED)
    return pytester


@MODES
def test_the_checks_own_credentials_refused_are_no_outage_and_get_no_platform_fix(
        refused_suite: pytest.Pytester, mode: list[str]) -> None:
    """Today: SEV1, "INCIDENT postgresql failing for auth-service, order-service", fixes
    "Restart service if connection pool exhausted". Their configuration: the checks are
    broken, the verdict incomplete (exit 6), no incident, no severity, each refusal said once
    with the fix for it."""
    result, summary = run(refused_suite, *mode)
    assert result.ret == 6, result.stdout.str()
    verdict = summary["verdict"]
    assert (verdict["status"], verdict["severity"], verdict["failing_checks"]) == (
        "incomplete", None, [])
    assert summary["incidents"] == summary["root_causes"] == summary["outages"] == []
    assert not (refused_suite.path / "reports" / "incident.md").exists()
    checks = by_id(summary)
    blinded = {"auth.postgresql-connectivity", "order.database-transaction-health",
               "ai.redis-cache-performance", "auth.recent-deployments",
               "listing.related-systems"}
    assert {i for i, c in checks.items() if c["outcome"] == "broken"} == blinded
    assert checks["auth.jwt-secret-configuration"]["outcome"] == "passed"
    for check_id in blinded:
        check = checks[check_id]
        assert check["severity"] is None and check["failed_dependencies"] == [], check
        assert "the checks' own credential was refused" in check["message"]
        own = set(CATALOG.check(check_id).fixes)
        assert not own & set(check["fixes"]), (check_id, check["fixes"])
        wanted = {fix for f in check["failures"]
                  for fix in CATALOG.fix_for(dependency_of(ProbeFailure.from_dict(f)),
                                             "auth_rejected").fixes}
        assert set(check["fixes"]) == wanted, check_id
    assert "Restart service if connection pool exhausted" not in result.stdout.str()
    refusals = {r["dependency"]: r for r in summary["refused_credentials"]}
    assert set(refusals) == {"kubernetes", "postgresql", "redis", "s3"}
    assert refusals["postgresql"]["checks"] == ["auth.postgresql-connectivity",
                                                "order.database-transaction-health"]
    assert 'password authentication failed for user "unibazzar_health"' in \
        refusals["postgresql"]["refusal"]
    output = result.stdout.str()
    assert "INCIDENT " not in output and "VERDICT SEV" not in output
    result.stdout.fnmatch_lines([
        "VERDICT INCOMPLETE: *; kubernetes, postgresql, redis, s3 refused the checks' own "
        "credentials",
        "  CANNOT SEE postgresql: it refused the checks' own credential, so 2 check(s) judged "
        "nothing there: fix the checks' configuration (no outage is shown)",
        "       fix:  The checks' own database role was refused*",
        "       next: PGCONNECT_TIMEOUT=5 PGPASSWORD=\"${{postgres_password_var}}\" psql *",
    ])
    # Each refusal's fix once, not once per check it blinded.
    assert output.count("fix:  The checks' own database role was refused") == 1


def fail_with(check_id: str, exc: BaseException | None) -> CheckResult:
    """The check's result as the plugin builds it (passed where ``exc`` is None)."""
    return build_result(entry=CATALOG.check(check_id), nodeid=check_id, catalog=CATALOG,
                        env=None, redactor=Redactor(), exc=exc, skipped=False, skip_reason="",
                        observed=None, duration_s=0.1)


# A check of each backend the checks log into with their own credential.
OWN = {"postgresql": "auth.postgresql-connectivity", "redis": "ai.redis-cache-performance",
       "rabbitmq": "listing.rabbitmq-event-publishing",
       "rabbitmq-management": "listing.rabbitmq-event-publishing",
       "dynamodb": "listing.dynamodb-table-status", "s3": "listing.s3-image-uploads",
       "cloudwatch": "listing.dynamodb-table-status", "kubernetes": "auth.scope-and-impact",
       "logs": "auth.error-patterns", "vector-db": "ai.vector-database-connectivity",
       "payments": "order.payment-reconciliation"}


@pytest.mark.parametrize("backend", sorted(OWN))
def test_every_backend_the_checks_log_into_refusing_them_is_their_configuration(
        backend: str) -> None:
    assert set(OWN) <= OWN_CREDENTIAL_BACKENDS
    refusal = ProbeError(backend, "somewhere", "refused our credential", 2.0,
                         kind=FailureKind.AUTH_REJECTED)
    result = fail_with(OWN[backend], refusal)
    assert (result.outcome, result.severity, result.failed_dependencies) == (
        Outcome.BROKEN, None, []), result
    assert not set(CATALOG.check(OWN[backend]).fixes) & set(result.fixes)


def test_a_service_refusing_what_we_sent_it_and_a_real_failure_beside_a_refusal_still_fail(
        ) -> None:
    """order-service refusing a correctly signed canary event is the platform's answer; a
    refusal of ours beside a real failure pins the check on the real one only."""
    signature = ProbeFailure("order-service", "http://orders/webhooks", FailureKind.AUTH_REJECTED,
                             "rejects a correctly signed event: HTTP 400")
    webhooks = fail_with("order.payment-provider-webhooks", Finding.of([signature]))
    assert webhooks.outcome is Outcome.FAILED
    assert webhooks.failed_dependencies == ["order-service"]
    ours = ProbeFailure("postgresql", "db:5432/orders", FailureKind.AUTH_REJECTED, "refused")
    down = ProbeFailure("payments", "https://api.stripe.com", FailureKind.TIMEOUT, "no answer",
                        2.0)
    mixed = fail_with("order.related-systems", Finding.of([ours, down]))
    assert mixed.outcome is Outcome.FAILED
    assert mixed.failed_dependencies == ["payments"]
    assert mixed.severity == "SEV2"  # the check's own class: the refusal rates nothing


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
@pytest.mark.parametrize(("variable", "backend"), [
    ("UNIBAZZAR_HEALTH_DB_PASSWORD", "postgresql"), ("UNIBAZZAR_REDIS_PASSWORD", "redis")])
def test_a_wrong_password_of_the_checks_pages_nobody_for_an_outage(
        tmp_path: Path, variable: str, backend: str) -> None:
    """Today: UNIBAZZAR_HEALTH_DB_PASSWORD=wrong gives SEV1 "postgresql failing for
    auth-service, order-service" while the canary login passes; Redis's gives SEV2."""
    result, summary = run_checks(tmp_path, extra_env={variable: "not-the-password"})
    assert result.returncode == 6, result.stdout[-3000:]
    assert summary["verdict"]["status"] == "incomplete"
    assert summary["verdict"]["severity"] is None and summary["incidents"] == []
    assert [r["dependency"] for r in summary["refused_credentials"]] == [backend]
    broken = [c for c in summary["checks"] if c["outcome"] == "broken"]
    assert broken and all(f["backend"] == backend and f["kind"] == "auth_rejected"
                          for c in broken for f in c["failures"])
    assert by_id(summary)["auth.jwt-secret-configuration"]["outcome"] == "passed"
    assert "CANNOT SEE " + backend in result.stdout
    assert "INCIDENT" not in result.stdout


# ---- 2. A failed backend's fixes first --------------------------------------------------------
BRING_BACK = {"postgres-down": ("postgresql", "refused"), "redis-down": ("redis", "refused"),
              "dynamodb-table-missing": ("dynamodb", "missing_object")}
SEEN: dict[str, dict[str, Any]] = {}


def _keep(name: str, summary: dict[str, Any]) -> None:
    if name in BRING_BACK:
        SEEN[name] = summary


GAME_DAY_OBSERVERS.append(_keep)


def game_day(tmp_path: Path, name: str) -> dict[str, Any]:
    """Its run's summary: as test_game_days.py showed it, else switched on here."""
    if name not in SEEN:
        with sandbox_logs_kept():
            sandbox("fault", name, "on")
            try:
                _, SEEN[name] = run_checks(tmp_path)
            finally:
                sandbox("fault", name, "off")
    return SEEN[name]


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
@pytest.mark.parametrize("name", list(BRING_BACK))
def test_with_a_backend_down_every_check_standing_on_it_starts_with_bringing_it_back(
        tmp_path: Path, name: str) -> None:
    """Today: Redis stopped shows ai.end-to-end-search first with "Scale up instances if
    CPU/memory bound"; the listings table gone, the indexing checks re-publish events and
    restart listing-service."""
    dependency, kind = BRING_BACK[name]
    first = CATALOG.fix_for(dependency, kind)
    assert first is not None, f"no fix for {dependency}.{kind}"
    failed = [c for c in game_day(tmp_path, name)["checks"] if c["outcome"] == "failed"]
    assert failed
    for check in failed:
        assert dependency in check["depends_on"], check["id"]
        assert check["fixes"][:len(first.fixes)] == list(first.fixes), (check["id"],
                                                                        check["fixes"])
    # The backend's own checks before the symptoms it explains, at each severity.
    assert dependency in failed[0]["failed_dependencies"], failed[0]["id"]


@pytest.mark.sandbox
@pytest.mark.usefixtures("running_sandbox")
def test_postgres_down_says_each_lost_capability_once(tmp_path: Path) -> None:
    """Today: eight sentences, "someone could get into accounts without a password" among
    them, for a database that refuses connections."""
    summary = game_day(tmp_path, "postgres-down")
    [alert] = messages.alerts(Summary.model_validate(summary))
    impact = alert.lines[2].removeprefix("Impact: ")
    sentences = re.findall(r"[^.]+\.", impact)
    assert [s.strip() for s in sentences] == [
        CATALOG.check("auth.related-systems").impact_statement,
        CATALOG.check("order.related-systems").impact_statement], impact
    assert "without a password" not in impact


def result(check_id: str, message: str, failures: tuple[ProbeFailure, ...] = (),
           impact: str | None = None) -> CheckResult:
    """A failed check as the plugin builds it, from its Finding."""
    return fail_with(check_id, Finding(message, impact=impact, failures=failures))


REDIS_REFUSED = ProbeFailure("redis", "cache:6379/1", FailureKind.REFUSED, "connection refused",
                             2.0)
SEARCH_TIMEOUT = ProbeFailure("ai-service", "http://ai/search", FailureKind.TIMEOUT,
                              "did not answer within the deadline", 2.0)
RUN = RunInfo("production", "production.toml", now(), now(), [])


def test_a_symptom_of_a_failed_backend_leads_with_the_backends_fix_and_impact() -> None:
    built = build_summary([
        result("ai.end-to-end-search", "search timed out", (SEARCH_TIMEOUT,)),
        result("ai.related-systems", "ai-service cannot reach redis", (REDIS_REFUSED,)),
        result("listing.related-systems", "listing-service cannot reach redis",
               (REDIS_REFUSED,)),
        fail_with("ai.vector-database-connectivity", None),  # passed: ai-service is no outage
    ], CATALOG, RUN)
    summary = built.to_dict()
    checks = by_id(summary)
    search = checks["ai.end-to-end-search"]
    restore = list(CATALOG.fix_for("redis", "refused").fixes)
    assert search["fixes"][:len(restore)] == restore
    assert "Restart service to reload models" in search["fixes"]  # its own, after
    assert search["commands"][0] == checks["ai.related-systems"]["commands"][0]
    # The cause first at one severity, then the symptom it explains.
    assert [c["id"] for c in summary["checks"]] == [
        "ai.related-systems", "listing.related-systems", "ai.end-to-end-search",
        "ai.vector-database-connectivity"]
    # The terminal's INCIDENT line counts what incident.md lists under the cause.
    [cause] = summary["root_causes"]
    assert len(cause["checks"]) == 3
    assert "  INCIDENT redis failing for ai-service, listing-service: one incident, SEV2 " \
           "(3 checks)" in render(built)
    details = messages.incident_markdown(built)
    assert all(f"[`{c}`]" in details for c in cause["checks"])


def test_the_impact_line_says_each_sentence_once_and_only_what_the_evidence_supports() -> None:
    down = ProbeFailure("postgresql", "db:5432/auth", FailureKind.REFUSED, "refused", 2.0)
    five_hundred = ProbeFailure("auth-service", "http://auth/login",
                                FailureKind.UNEXPECTED_ANSWER, "HTTP 503", 2.0)
    summary = build_summary([
        result("auth.postgresql-connectivity", "refused", (down,)),
        result("auth.database-performance", "refused", (down,)),
        result("auth.jwt-secret-configuration", "auth-service is failing", (five_hundred,),
               impact="degradation"),
    ], CATALOG, RUN)
    [alert] = messages.alerts(summary)
    assert alert.lines[2] == "Impact: " + CATALOG.check("auth.related-systems").impact_statement
    # A finding in what the check read keeps its own sentence; a repeat differing only in
    # spacing, case or its full stop is said once.
    stuck = result("order.saga-orchestration", "2 saga(s) stuck")
    assert stuck.impact_statement == CATALOG.check("order.saga-orchestration").impact_statement
    twice = [Check(id=f"c{n}", service="order-service", outcome="failed",
                   impact_statement=sentence) for n, sentence in enumerate((
        "Search may be slow.", "search  may be slow", "Orders may hang.",
        "Orders may hang, or fail."))]
    assert messages._impact_sentences(twice) == "Search may be slow. Orders may hang, or fail."
    # Checks of one capability share its sentence word for word (the catalog's).
    for capability in (("listing.indexing-performance", "listing.indexing-lag",
                        "listing.rabbitmq-event-publishing"),
                       ("order.database-performance", "order.database-transaction-health"),
                       ("auth.postgresql-connectivity", "auth.database-performance"),
                       ("ai.vector-database-connectivity", "ai.end-to-end-search",
                        "ai.embedding-service-health")):
        assert len({CATALOG.check(c).impact_statement for c in capability}) == 1, capability
    # Pinned on the Kubernetes API only: a blind spot of the checks, no customer impact.
    blind = result("auth.recent-deployments", "cannot read rollouts",
                   (ProbeFailure("kubernetes", "k8s", FailureKind.TIMEOUT, "no answer", 2.0),))
    assert blind.impact_statement is not None
    assert blind.impact_statement.startswith("No customer impact is shown")


# ---- 3. The command line ------------------------------------------------------------------
CHECKS = '''
import os
from unibazzar_health.judges.runbook import runbook_check


def observe(ctx):
    with open(os.environ["OBSERVED_LOG"], "a") as out:
        out.write("observed\\n")
    return {"served": "999"}


@runbook_check("auth.postgresql-connectivity", observe=observe)
def test_fine(observed):
    pass


@runbook_check("listing.s3-image-uploads", observe=observe)
def test_writes(observed):
    pass


@runbook_check("ai.vector-database-connectivity", observe=lambda ctx: ctx.vector_db())
def test_not_configured(observed):
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("OBSERVED_LOG", str(pytester.path / "observed.log"))
    for name in ("UNIBAZZAR_RUN_MODE", "UNIBAZZAR_ENV", "UNIBAZZAR_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest('pytest_plugins = ["unibazzar_health.plugin"]\n')
    pytester.makefile(".toml", env='[environment]\nname = "cli"\n')
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def observed(pytester: pytest.Pytester) -> bool:
    return (pytester.path / "observed.log").exists()


def usage_error(result: pytest.RunResult) -> str:
    """The one ERROR line of a usage error."""
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert result.ret == 4 and len(errors) == 1, (result.ret, result.stderr.str())
    return errors[0]


@MODES
def test_an_environment_file_given_apart_from_its_option_never_moves_the_rootdir(
        suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
        mode: list[str]) -> None:
    """Today: pytest takes the path for a test path, its rootdir moves there, and the run
    collects whatever lies under the working directory (the self-tests once)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "env.toml"
    elsewhere.write_text('[environment]\nname = "elsewhere"\n')
    suite.makepyfile(test_not_a_check="def test_unrelated():\n    assert False\n")
    result = suite.runpytest_subprocess("--env-file", str(elsewhere),
                                        f"--reports-dir={suite.path / 'reports'}", *mode)
    assert f"--env-file={elsewhere}" in usage_error(result)
    assert not observed(suite) and not (suite.path / "reports").exists()
    assert "test_unrelated" not in result.stdout.str()
    # Where pytest's rootdir stays as it is, the form with a space works.
    done = suite.runpytest_subprocess("--env-file", "env.toml",
                                      f"--reports-dir={suite.path / 'reports'}", *mode,
                                      "test_checks.py")
    assert done.ret == 6 and observed(suite), done.stdout.str()  # a check not configured


@MODES
def test_a_failed_test_that_is_no_check_never_exits_0(suite: pytest.Pytester,
                                                      mode: list[str]) -> None:
    """Today: `pytest checks /tmp/x/test_fail.py` prints FAILED and `exit 0: healthy`."""
    suite.makepyfile(test_other="def test_fail():\n    assert False\n")
    for gate in ("--fail-on=any", "--fail-on=never"):
        result, summary = run(suite, *mode, gate, "-k", "not not_configured")
        assert result.ret == 1, result.stdout.str()
        assert summary["verdict"]["status"] == "healthy"
        assert summary["other_failures"] == ["test_other.py::test_fail"]
        result.stdout.fnmatch_lines([
            "  FAILED test_other.py::test_fail: a test that is no runbook check*",
            "exit 1: 1 test(s) that are no runbook check failed (test_other.py::test_fail)*"])


@MODES
@pytest.mark.parametrize("where", ["/proc/nope", "a-file"])
def test_a_reports_dir_that_cannot_be_written_stops_the_run_before_any_probe(
        suite: pytest.Pytester, mode: list[str], where: str) -> None:
    """Today: found after every probe and canary write ran, with a traceback and exit 1."""
    if where == "a-file":
        where = str(suite.path / "a-file")
        Path(where).write_text("")
    result = suite.runpytest_subprocess("--env-file=env.toml", f"--reports-dir={where}", *mode)
    assert usage_error(result).startswith(f"ERROR: reports directory {where}: cannot create "
                                          "or write to it")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not observed(suite)


@pytest.mark.parametrize(("environ", "args", "expected"), [
    ({}, [], "oncall"),  # output to a pipe is no scheduled run
    ({"UNIBAZZAR_RUN_MODE": "scheduled"}, [], "scheduled"),
    ({"CI": "true"}, [], "ci"),
    ({"UNIBAZZAR_RUN_MODE": "scheduled", "CI": "true"}, [], "scheduled"),
    ({"UNIBAZZAR_RUN_MODE": "scheduled"}, ["--run-mode=ci"], "ci"),
])
def test_the_run_mode_comes_from_explicit_signals_and_is_recorded(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
        args: list[str], expected: str) -> None:
    """Today: `pytest | tee` silently becomes scheduled (HOLD... 1 of 2 runs)."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    _, summary = run(suite, "-p", "no:xdist", *args)
    assert summary["run_mode"] == expected


def test_a_bad_run_mode_variable_is_a_usage_error(suite: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIBAZZAR_RUN_MODE", "nightly")
    result, _ = run(suite, "-p", "no:xdist")
    assert "$UNIBAZZAR_RUN_MODE" in usage_error(result) and "'nightly'" in result.stderr.str()
    assert not observed(suite)


@pytest.mark.parametrize(("args", "says"), [
    (["--budget=0"], "ERROR: --budget: expected a positive number of seconds, got '0'"),
    (["--concurrency=0"], "ERROR: --concurrency: expected a positive whole number, got '0'"),
    (["--env=production", "--env-file=env.toml"],
     "ERROR: --env=production and --env-file=env.toml both choose the environment: give one"),
    (["--env=environments/sandbox.toml"],
     "ERROR: --env=environments/sandbox.toml: --env takes an environment's name (it reads "
     "environments/NAME.toml); for a file, use --env-file=environments/sandbox.toml"),
])
def test_a_bad_option_says_which_and_what_to_write(suite: pytest.Pytester, args: list[str],
                                                    says: str) -> None:
    env_file = [] if any(a.startswith("--env") for a in args) else ["--env-file=env.toml"]
    result = suite.runpytest_subprocess(*env_file, *args, "-p", "no:xdist")
    assert usage_error(result) == says
    assert not observed(suite)


def test_read_only_names_each_skipped_check_once(suite: pytest.Pytester) -> None:
    """Today: a healthy read-only run says `SKIPPED listing.s3-image-uploads` and then
    `READ-ONLY skipped the checks that write: listing.s3-image-uploads`."""
    suite.makepyfile(test_checks=CHECKS.replace("lambda ctx: ctx.vector_db()", "observe")
                     + '\n@runbook_check("listing.cache-freshness", observe=observe)\n'
                       'def test_reads(observed):\n    pass\n')
    result, summary = run(suite, "-p", "no:xdist", "--read-only")
    assert summary["verdict"]["status"] == "healthy", result.stdout.str()
    verdict = result.stdout.str().split("UniBazzar incident verdict", 1)[1]
    assert verdict.count("listing.s3-image-uploads") == 1, verdict


def test_pytest_markers_lists_each_marker_once() -> None:
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "--markers"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    declared = re.findall(r"^@pytest\.mark\.([a-z_-]+)\b", done.stdout, re.MULTILINE)
    assert {"order-service", "postgres", "check"} <= set(declared)
    assert sorted(m for m in set(declared) if declared.count(m) > 1) == []


def test_an_age_in_the_evidence_reads_as_people_say_it() -> None:
    """Today: "created 28980694 s ago"."""
    import importlib.util

    from unibazzar_health.judges.indexing import IndexFreshness

    path = ROOT / "checks" / "listing_service" / "test_listing_service.py"
    spec = importlib.util.spec_from_file_location("checks_listing_service_ages", path)
    assert spec is not None and spec.loader is not None
    listing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(listing)
    index = IndexFreshness(listings=[], not_indexed=1, oldest_not_indexed_id="listing-0001",
                           oldest_not_indexed_age_s=28980694.0, newest_id="listing-0009",
                           newest_indexed_id="listing-0002", newest_indexed_behind_s=75.0)
    lag = listing._index_lag(index, 60.0)
    assert "created 335 d 10 h ago" in lag and "28980694" not in lag
    assert "is 75 s older than the newest" in lag


def test_the_sandbox_script_prints_no_colour_codes_off_a_terminal() -> None:
    """Its bootstrap's "[bootstrap] ready", on stderr, in a log or a pipe: plain text."""
    done = subprocess.run([str(ROOT / "scripts" / "sandbox"), "fault", "list", "--json"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    assert done.returncode == 0, done.stderr
    assert "[bootstrap] ready" in done.stderr
    assert "\x1b[" not in done.stderr
