"""Where everything lives: ports on loopback, the state directory, the secrets.

The ports are fixed so that environments/sandbox.toml can name them, and lie outside the
kernel's ephemeral port range.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_STATE_DIR = Path("/tmp/unibazzar-sandbox")  # /tmp: the postgres user must reach it

# Below Linux's ephemeral range (32768-60999): a port in it can be taken at any moment as the
# local end of some outgoing connection, and a server binding it then fails to start.
PORTS: dict[str, int] = {
    "postgresql": 25432,
    "redis": 26379,
    "rabbitmq": 25672,
    "rabbitmq-management": 25673,
    "rabbitmq-dist": 25674,
    "epmd": 25675,
    "moto": 25000,
    "kubernetes": 25443,
    "payments": 25420,
    "vector-db": 25800,
    "auth-service": 28001,
    "listing-service": 28002,
    "order-service": 28003,
    "ai-service": 28004,
}

SECRET_NAMES = (
    "UNIBAZZAR_HEALTH_DB_PASSWORD",  # the checks' read-only PostgreSQL role
    "UNIBAZZAR_AUTH_DB_PASSWORD",
    "UNIBAZZAR_ORDER_DB_PASSWORD",
    "UNIBAZZAR_REDIS_PASSWORD",
    "UNIBAZZAR_RABBITMQ_PASSWORD",
    "UNIBAZZAR_JWT_SECRET",
    "UNIBAZZAR_CANARY_PASSWORD",
    "UNIBAZZAR_STRIPE_API_KEY",
    "UNIBAZZAR_STRIPE_WEBHOOK_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def from_env(cls, override: str | None = None) -> Layout:
        return cls(Path(override or os.environ.get("UNIBAZZAR_SANDBOX_DIR") or DEFAULT_STATE_DIR))

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def logs(self) -> Path:
        return self.path("logs")

    @property
    def faults(self) -> Path:
        """Faults a test injects into the stand-in services (see docs/sandbox.md)."""
        return self.path("faults")

    @property
    def pidfile(self) -> Path:
        return self.path("supervisor.pid")

    @property
    def statefile(self) -> Path:
        return self.path("state.json")

    @property
    def control_socket(self) -> Path:
        return self.path("control.sock")

    @property
    def secrets_file(self) -> Path:
        return self.path("secrets.env")

    def url(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{PORTS[name]}"


def load_or_create_secrets(layout: Layout) -> dict[str, str]:
    """Random per sandbox, kept across ups so a shell that sourced them stays right."""
    values: dict[str, str] = {}
    if layout.secrets_file.exists():
        for line in layout.secrets_file.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name and value:
                values[name] = value
    for name in SECRET_NAMES:
        if name not in values:
            prefix = "sk_test_" if name == "UNIBAZZAR_STRIPE_API_KEY" else (
                "whsec_" if name == "UNIBAZZAR_STRIPE_WEBHOOK_SECRET" else "")
            values[name] = prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    layout.root.mkdir(parents=True, exist_ok=True)
    tmp = layout.secrets_file.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    tmp.chmod(0o600)
    tmp.replace(layout.secrets_file)
    return values
