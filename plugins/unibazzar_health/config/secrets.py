"""The secrets an environment file names, resolved from the process environment or the
secrets file (python-dotenv), every one present before any probe runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unibazzar_health.config.errors import EnvironmentFileError


def _secret_keys(raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, variable name) for every ``*_env`` key in the file."""
    found: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            dotted = f"{prefix}{key}"
            if key.endswith("_env") and isinstance(value, str):
                found.append((dotted, value))
            else:
                found.extend(_secret_keys(value, dotted + "."))
    return found


def resolve_secrets(
    path: Path, secrets_file: str | None, raw: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    """Every secret ``raw`` names (a ``*_env`` key), from ``environ`` else the secrets file
    (relative to the environment file)."""
    fallback: dict[str, str] = {}
    if secrets_file:
        secrets_path = (path.parent / secrets_file).resolve()
        fallback = _read_dotenv(path, secrets_path)
    resolved: dict[str, str] = {}
    for key, var in _secret_keys(raw):
        value = environ.get(var) or fallback.get(var)
        if not value:
            source = f" (nor in {secrets_file})" if fallback else ""
            raise EnvironmentFileError(
                path, key, var, f"environment variable {var} is not set{source}")
        resolved[var] = value
    return resolved


def _read_dotenv(env_path: Path, path: Path) -> dict[str, str]:
    """A dotenv file as python-dotenv reads it (quotes, escapes, inline comments,
    ``export``), never interpolated: a secret holding ``$`` stays as written."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise EnvironmentFileError(
            env_path, "environment.secrets_file", str(path),
            "no such file (for the sandbox: run scripts/sandbox up)")
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {name: value for name, value in values.items() if value is not None}

