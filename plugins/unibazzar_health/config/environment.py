"""An environment: which file a run reads, the file validated whole (its sections, kubeconfig
and secrets), and the resolved Environment handed to probes and across xdist workers.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from unibazzar_health.config.errors import NO_VALUE, EnvironmentFileError
from unibazzar_health.config.fields import _Section
from unibazzar_health.config.incident import (
    Alerting,
    Calendar,
    Contacts,
    Escalation,
    IncidentState,
    Maintenance,
    Notify,
    OnCall,
    ReportLinks,
    Silence,
)
from unibazzar_health.config.kubeconfig import _check_kubernetes
from unibazzar_health.config.names import ServiceName, config_key
from unibazzar_health.config.platform import (
    AuthLogs,
    AwsTarget,
    CanaryUser,
    Deadlines,
    EnvironmentInfo,
    ErrorLogs,
    Impact,
    KubernetesTarget,
    PaymentsTarget,
    PostgresTarget,
    RabbitMQTarget,
    RedisTarget,
    ServiceTarget,
    Thresholds,
    VectorDbTarget,
)
from unibazzar_health.config.redaction import Redactor
from unibazzar_health.config.secrets import resolve_secrets

ENV_VAR_SELECT_NAME = "UNIBAZZAR_ENV"


ENV_VAR_SELECT_FILE = "UNIBAZZAR_ENV_FILE"


DEFAULT_ENVIRONMENT = "sandbox"


class EnvironmentFile(_Section):
    environment: EnvironmentInfo
    deadlines: Deadlines = Deadlines()
    thresholds: Thresholds = Thresholds()
    services: dict[ServiceName, ServiceTarget] = {}
    postgresql: dict[str, PostgresTarget] = {}
    redis: dict[str, RedisTarget] = {}
    rabbitmq: RabbitMQTarget | None = None
    aws: AwsTarget | None = None
    # None: the Kubernetes checks are skipped; a default here would run them against
    # whatever ~/.kube/config happens to hold, or break them where there is none.
    kubernetes: KubernetesTarget | None = None
    vector_db: VectorDbTarget | None = None
    payments: PaymentsTarget | None = None
    canary: CanaryUser | None = None
    auth_logs: AuthLogs = AuthLogs()
    error_logs: ErrorLogs = ErrorLogs()
    # None: no metrics source, the share of failing requests is unknown.
    impact: Impact | None = None
    oncall: OnCall = OnCall()
    contacts: Contacts = Contacts()
    escalation: Escalation = Escalation()
    calendar: Calendar = Calendar()
    report: ReportLinks = ReportLinks()
    notify: Notify | None = None
    incident_state: IncidentState | None = None
    alerting: Alerting = Alerting()
    silences: list[Silence] = []
    maintenance: list[Maintenance] = []

    def service(self, name: str) -> ServiceTarget | None:
        return self.services.get(name)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Environment:
    """A validated environment file with its secrets resolved."""

    path: Path
    spec: EnvironmentFile
    secrets: Mapping[str, str] = field(repr=False)
    # The kubeconfig context the run uses (kubernetes.context, else the kubeconfig's
    # current-context when the file was loaded): what printed kubectl commands name.
    kube_context: str | None = None

    @property
    def name(self) -> str:
        return self.spec.environment.name

    def secret(self, env_var: str | None) -> str | None:
        return None if env_var is None else self.secrets[env_var]

    def deadline(self, backend: str) -> float:
        """The deadline of ``backend`` (as names.BACKENDS spells it, or ``http``): its own
        [deadlines] key, else the default."""
        value: float | None = getattr(self.spec.deadlines, config_key(backend))
        return value if value is not None else self.spec.deadlines.default

    def redactor(self) -> Redactor:
        return Redactor(self.secrets.values())

    def to_wire(self) -> dict[str, Any]:
        """Plain data, to hand the resolved settings to xdist workers."""
        return {"path": str(self.path), "spec": self.spec.model_dump(mode="json"),
                "secrets": dict(self.secrets), "kube_context": self.kube_context}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Environment:
        return cls(Path(data["path"]), EnvironmentFile.model_validate(data["spec"]),
                   dict(data["secrets"]), data.get("kube_context"))


def choose_environment_file(
    root: Path, env_name: str | None, env_file: str | None, environ: Mapping[str, str]
) -> Path:
    """Command line beats environment variables, which beat the sandbox default."""
    if env_file:
        return Path(env_file)
    if env_name:
        return root / "environments" / f"{env_name}.toml"
    if environ.get(ENV_VAR_SELECT_FILE):
        return Path(environ[ENV_VAR_SELECT_FILE])
    return root / "environments" / f"{environ.get(ENV_VAR_SELECT_NAME) or DEFAULT_ENVIRONMENT}.toml"


def read_environment_file(path: Path) -> tuple[EnvironmentFile, dict[str, Any]]:
    """The file validated (its secrets not resolved) and its raw TOML: one EnvironmentFileError
    naming file, key and value when it is bad."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnvironmentFileError(path, "", NO_VALUE, "no such environment file") from None
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentFileError(path, "", NO_VALUE, f"not valid TOML ({exc})") from None
    try:
        return EnvironmentFile.model_validate(raw), raw
    except ValidationError as exc:
        raise first_error(path, exc) from None


def load_environment(path: Path, environ: Mapping[str, str] | None = None,
                     check_sections: Callable[[Path, EnvironmentFile], None] | None = None,
                     ) -> Environment:
    """The file validated, its kubeconfig checked and its secrets resolved. A layer above
    validates what it owns (the notifiers' tables: incidents.config) in ``check_sections``,
    as soon as the file is read, so its errors come where pydantic's own would."""
    environ = os.environ if environ is None else environ
    spec, raw = read_environment_file(path)
    if check_sections is not None:
        check_sections(path, spec)
    kube_context = _check_consistency(path, spec, environ)
    secrets = resolve_secrets(path, spec.environment.secrets_file, raw, environ)
    # What only the incident layer can judge (notifiers' settings, silenced checks) it
    # checks itself: incidents.config.load_environment, which every entry point calls.
    return Environment(path, spec, secrets, kube_context)


def first_error(path: Path, exc: ValidationError,
                within: tuple[str, ...] = ()) -> EnvironmentFileError:
    """Pydantic's first error as the file's, its key prefixed by ``within`` (the table a
    section's own model validated: ``("notify", "slack")``)."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in (*within, *error["loc"]))
    if error["type"] == "extra_forbidden":
        return EnvironmentFileError(path, key, error["input"], "unknown key")
    if error["type"] == "missing":
        return EnvironmentFileError(path, key, NO_VALUE, "required key is missing")
    reason = error["msg"].removeprefix("Value error, ")
    return EnvironmentFileError(path, key, error["input"], reason)


def _check_consistency(path: Path, spec: EnvironmentFile,
                       environ: Mapping[str, str]) -> str | None:
    """Raises on a file that cannot be used; returns the kubeconfig context it resolved."""
    if spec.impact is not None and spec.impact.source == "cloudwatch" and spec.aws is None:
        raise EnvironmentFileError(path, "impact.source", "cloudwatch",
                                   "needs an [aws] section (its region and credentials)")
    if spec.kubernetes is not None:
        return _check_kubernetes(path, spec.kubernetes, environ)
    return None

