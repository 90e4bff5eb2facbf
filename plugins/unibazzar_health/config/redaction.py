"""Keep secret values out of every string that leaves a run."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Shorter values would mask ordinary words and numbers; no real secret is this short.
_MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces every known secret value, and any password in a URL, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def text(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        return _URL_PASSWORD.sub(r"\1" + MASK + "@", value)

    def data(self, value: Any) -> Any:
        """Redact every string inside plain JSON-like data."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


# scheme://user:password@ — whatever the password is, it never leaves.
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")


def url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{MASK}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


# What a log line may carry that is a credential whatever its value: masked in every excerpt
# of a service's log (the run's Redactor masks only the secrets it knows).
# A value: up to a quote, separator or space; closing brackets right before one are the
# line's, not the value's ("(token=abc)"), but a bracket inside the value is masked with it.
_VALUE = r"[^\s\"',;&]+?([)\]}]*)(?=[\s\"',;&]|$)"
_CREDENTIAL_PATTERNS = (
    # key=value, key: value, "key": "value" under a name that says it is a credential
    (re.compile(r"(?i)(\b[\w.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|"
                r"credential|session[_-]?id|cookie|signature)[\w.-]*[\"']?\s*[=:]\s*[\"']?)"
                + _VALUE), r"\1" + MASK + r"\2"),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[=:]\s*[\"']?(?:bearer|basic)?\s*)" + _VALUE),
     r"\1" + MASK + r"\2"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),  # a JWT
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{8,}"), MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),  # an AWS access key id
)


def mask_credentials(text: str) -> str:
    """``text`` (a log line) with anything that looks like a credential masked: values of
    password=, token=, api_key=, Authorization:, bearer tokens, JWTs, Stripe and AWS keys,
    and any password in a URL."""
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
