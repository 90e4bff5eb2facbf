"""How a bad value in the environment file is told: the file, the key and the value, a
secret's value never shown (a key that names one, a URL's password, a query's token).
"""

from __future__ import annotations

import re
from datetime import date
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from unibazzar_health.config.redaction import MASK, url_without_password

ENV_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")

# A key whose value is likely a secret written where it must not be: shown masked.
SECRET_LIKE_KEY = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


# A query parameter whose name says it carries a secret (libpq and redis-py honour some).
SECRET_QUERY = re.compile(r"(?i)(^|&)([^=&]*(?:pass|secret|token|key|auth)[^=&]*)=([^&]*)")


def _mask_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    return urlunsplit(parts._replace(query=SECRET_QUERY.sub(r"\1\2=***", parts.query)))


def shown_url(url: str) -> str:
    """``url`` as an error may show it: its password and secret-like query values masked."""
    return _mask_query(url_without_password(url))


# Keys that match SECRET_LIKE_KEY but hold no secret: names the file's author chose (a
# database called "auth"), the auth_logs section, and a path (shown: masked, "no such
# file" would not say which file).
_NAMED_TABLES = frozenset({"services", "postgresql", "redis"})


_NOT_SECRET_KEYS = frozenset({"auth_logs", "environment.secrets_file"})


def _names_a_secret(key: str) -> bool:
    """Whether ``key``'s value, or anything inside it, may be a secret: some part of its
    path is secret-like (a table under ``password`` hides its contents too). A last part
    ending in ``_env`` names a variable, judged by its value in ``_shown``."""
    parts = key.split(".")
    for index, part in enumerate(parts):
        if index == 1 and parts[0] in _NAMED_TABLES:
            continue
        if ".".join(parts[: index + 1]) in _NOT_SECRET_KEYS:
            continue
        if index == len(parts) - 1 and part.endswith("_env"):
            continue
        if SECRET_LIKE_KEY.search(part):
            return True
    return False


def _shown(key: str, value: object) -> object:
    """What an error may show of ``value``, whatever its TOML type: nothing that could be a
    secret. Masked by key first, since a secret may be a number, a list or a table."""
    if _names_a_secret(key):
        return MASK
    if key.rsplit(".", 1)[-1].endswith("_env"):
        return value if isinstance(value, str) and ENV_VAR_NAME.fullmatch(value) else MASK
    if isinstance(value, str):
        return shown_url(value)
    if isinstance(value, dict):
        return {name: _shown(f"{key}.{name}", item) for name, item in value.items()}
    if isinstance(value, list):
        return [_shown(key, item) for item in value]
    if isinstance(value, date | dt_time):  # as the file writes it, not datetime.datetime(…)
        return value.isoformat()
    return value  # a number or a boolean: its key already says it is no secret


class EnvironmentFileError(Exception):
    """A bad environment file: names the file, the key and the value (never a secret)."""

    def __init__(self, path: Path | str, key: str, value: object, reason: str) -> None:
        self.path, self.key, self.value, self.reason = str(path), key, value, reason
        where = f"key '{key}'" if key else "file"
        value_part = "" if value is NO_VALUE else f": value {_shown(key, value)!r}"
        super().__init__(f"{path}: {where}{value_part}: {reason}")


NO_VALUE: Any = object()


def secret_in_url(value: str) -> str | None:
    """What in ``value`` is a secret that must not be written where it is (a file, a
    command line, and so every summary and log that shows it): a password, a query
    parameter whose name sounds secret; None when there is none."""
    parts = urlsplit(value)
    if parts.password is not None:
        return "the URL carries a password"
    if SECRET_QUERY.search(parts.query):
        return "the URL carries a secret in its query"
    return None

