"""From the environment file to the incident machinery: the start-up validation that stops a
run with a bad [notify], [incident_state] or [[silences]] before any probe, and the typed
objects posting works with (the policy, the notifiers, the store), each built once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from unibazzar_health.config import environment
from unibazzar_health.config.environment import (
    Environment,
    EnvironmentFile,
    first_error,
    read_environment_file,
)
from unibazzar_health.config.errors import NO_VALUE, EnvironmentFileError
from unibazzar_health.config.incident import IncidentState, Notify
from unibazzar_health.config.secrets import resolve_secrets
from unibazzar_health.incidents.lifecycle import (
    DEFAULT_ALERT_AFTER,
    DEFAULT_RESOLVE_AFTER,
    Mute,
    Policy,
)
from unibazzar_health.incidents.notifiers import NOTIFIERS, build_all, settings_model
from unibazzar_health.incidents.notifiers.base import ConfigError, Notifier
from unibazzar_health.incidents.redis_store import RedisStore
from unibazzar_health.incidents.state import StateStore
from unibazzar_health.verdict.catalog import load_catalog
from unibazzar_health.verdict.policy import (
    DEFAULT_ESCALATION_MINUTES,
    WEEKDAY_NUMBERS,
    BusinessCalendar,
)


def load_environment(path: Path, environ: Mapping[str, str] | None = None) -> Environment:
    """The environment file, validated whole: the config layer's reading, the notifiers'
    tables by their own models, then what only the incident layer can judge. Every entry
    point (the plugin, the commands) reads it here, so a bad notifier setting is the file's
    error before any probe runs."""
    env = environment.load_environment(path, environ, check_notifier_tables)
    spec = env.spec
    if spec.notify or spec.incident_state or spec.silences or spec.maintenance:
        check_incident_settings(path, spec, env.secrets)
    return env


def check_incident_settings(path: Path, spec: EnvironmentFile,
                            secrets: Mapping[str, str]) -> None:
    """What pydantic cannot see in the file alone, as the environment file's own errors."""
    state = spec.incident_state
    if state is not None and state.backend == "redis" and state.url is None:
        raise EnvironmentFileError(path, "incident_state.url", NO_VALUE,
                                   "required when incident_state.backend is 'redis'")
    if spec.silences:
        known = load_catalog().checks
        for index, silence in enumerate(spec.silences):
            if silence.check is not None and silence.check not in known:
                raise EnvironmentFileError(path, f"silences.{index}.check", silence.check,
                                           "no check of the catalog has this id")
    if spec.notify is not None:
        try:
            build_all(notifier_settings(path, spec.notify), lambda var: secrets[var])
        except ConfigError as exc:
            raise EnvironmentFileError(path, exc.key, exc.value, exc.reason) from None


def check_notifier_tables(path: Path, spec: EnvironmentFile) -> None:
    """Each [notify.<name>] table, as soon as the file is read (see notifier_settings)."""
    if spec.notify is not None:
        notifier_settings(path, spec.notify)


def notifier_settings(path: Path, notify: Notify) -> dict[str, BaseModel]:
    """Each configured notifier's settings, by name in NOTIFIERS' order, validated with the
    model of the notifier that owns its table: a name no notifier has, or a bad value, is
    the environment file's error (file, ``notify.<name>.<key>``, value), as pydantic's."""
    tables = notify.tables
    for name, table in tables.items():
        if name not in NOTIFIERS:
            raise EnvironmentFileError(path, f"notify.{name}", table, "unknown key")
    settings: dict[str, BaseModel] = {}
    for name in NOTIFIERS:
        if name in tables:
            try:
                settings[name] = settings_model(name).model_validate(tables[name])
            except ValidationError as exc:
                raise first_error(path, exc, within=("notify", name)) from None
    return settings


def enabled(env: Environment) -> bool:
    """Incidents are remembered (and posted) only where the environment asks for it: the
    sandbox, without either section, keeps every run on its own."""
    return env.spec.notify is not None or env.spec.incident_state is not None


def notifiers(env: Environment) -> list[Notifier]:
    """The environment's notifiers, built with their validated settings and secrets."""
    if env.spec.notify is None:
        return []
    return build_all(notifier_settings(env.path, env.spec.notify),
                     lambda var: env.secrets[var])


def mutes(env: Environment) -> tuple[Mute, ...]:
    spec = env.spec
    found = [Mute(reason=s.reason, until=s.until, service=s.service, check=s.check)
             for s in spec.silences]
    for window in spec.maintenance:
        services: list[str | None] = [*window.services] or [None]  # None: every service
        found += [Mute(reason=window.reason, until=window.end, start=window.start,
                       service=service, kind="maintenance") for service in services]
    return tuple(found)


def contacts(spec: EnvironmentFile) -> dict[str, str]:
    """Who each escalation reaches, by [contacts] key (level_2…level_4, aws_support,
    payment_provider, security_team; those set), Level 3 defaulting to [oncall] manager.
    The summary's Response and the incident policy both read them here."""
    found = {key: who for key, who in spec.contacts.model_dump().items() if who}
    found.setdefault("level_3", spec.oncall.manager)
    return found


def business_calendar(spec: EnvironmentFile) -> BusinessCalendar:
    """The environment's [calendar] as the policy reads it (SEV4: the next business day)."""
    calendar = spec.calendar
    return BusinessCalendar(timezone=calendar.timezone,
                            workdays=tuple(WEEKDAY_NUMBERS[d] for d in calendar.workdays),
                            day_starts=calendar.day_starts, holidays=tuple(calendar.holidays))


def policy(env: Environment, run_mode: str, posting: list[Notifier]) -> Policy:
    spec = env.spec
    alerting = spec.alerting
    every = {level: minutes for level, minutes in
             alerting.update_every_minutes.model_dump().items() if minutes is not None}
    named = contacts(spec)
    internal = {1: spec.oncall.primary, **{n: named[f"level_{n}"] for n in (2, 3, 4)
                                           if f"level_{n}" in named}}
    teams = ("aws_support", "payment_provider", "security_team", "infrastructure_team")
    external: dict[str, str] = {key: named[key] for key in teams if key in named}
    severities = load_catalog().severities
    return Policy(
        environment=env.name,
        alert_after=alerting.alert_after or DEFAULT_ALERT_AFTER[run_mode],
        resolve_after=alerting.resolve_after or DEFAULT_RESOLVE_AFTER[run_mode],
        update_every_minutes=every,
        respond_within_minutes={level: s.respond_within_minutes
                                for level, s in severities.items()},
        calendar=business_calendar(spec),
        # A partial [escalation] replaces the defaults of the severities it names only.
        escalation_minutes={**DEFAULT_ESCALATION_MINUTES, **spec.escalation.minutes()},
        contacts=internal,
        external_contacts=external,
        severities=severities,
        notifiers=tuple((n.name, n.kinds) for n in posting),
        mutes=mutes(env),
        ack_timeout_minutes=spec.escalation.ack_timeout_minutes,
        secondary=spec.oncall.secondary,
    )


def open_store(env: Environment, reports_dir: Path) -> StateStore:
    """The environment's store ([incident_state]; default: SQLite under the reports
    directory)."""
    config = env.spec.incident_state or IncidentState()
    return store_of(config, env.secret(config.password_env), reports_dir)


def open_store_of_file(path: Path, reports_dir: Path,
                       environ: Mapping[str, str]) -> tuple[StateStore, str]:
    """(store, environment name) an environment file names, for the commands that only read
    the store (timeline, postmortem): the file is validated, but of its secrets only the
    store's password is resolved — a runner that reads the timeline needs no Slack URL."""
    spec, raw = read_environment_file(path)
    check_notifier_tables(path, spec)
    config = spec.incident_state or IncidentState()
    if config.backend == "redis" and config.url is None:
        raise EnvironmentFileError(path, "incident_state.url", NO_VALUE,
                                   "required when incident_state.backend is 'redis'")
    only_the_store = {"incident_state": raw.get("incident_state", {})}
    secrets = resolve_secrets(path, spec.environment.secrets_file, only_the_store, environ)
    password = secrets[config.password_env] if config.password_env else None
    return store_of(config, password, reports_dir), spec.environment.name


def store_of(config: IncidentState, password: str | None, reports_dir: Path) -> StateStore:
    if config.backend == "redis":
        assert config.url is not None  # check_incident_settings
        return RedisStore(config.url, password, prefix=config.key_prefix,
                          deadline=config.deadline, lock_wait=config.lock_wait,
                          keep_runs=config.keep_runs, keep_days=config.keep_days)
    # Imported here: SqliteStore brings sqlite3, which a run that keeps no incidents (or keeps
    # them in Redis) never loads.
    from unibazzar_health.incidents.sqlite_store import SqliteStore

    path = Path(config.path)
    return SqliteStore(path if path.is_absolute() else reports_dir / path,
                       lock_wait=config.lock_wait, keep_runs=config.keep_runs,
                       keep_days=config.keep_days)
