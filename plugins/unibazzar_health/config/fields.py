"""The environment file's value types and their validators, shared by its sections: URLs,
environment variable names, regexes, templates, minutes and time zones.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from unibazzar_health.config.errors import ENV_VAR_NAME, secret_in_url


def _url(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a URL with scheme {' or '.join(schemes)}")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            parts.port  # noqa: B018 - parsing the port is the validation
        except ValueError as exc:
            raise ValueError(f"bad port ({exc})") from None
        secret = secret_in_url(value)
        if secret:
            raise ValueError(f"{secret}: write it in an environment variable and name it "
                             "in the matching *_env key")
        return value

    return AfterValidator(check)


def _env_var_name(value: str) -> str:
    if not ENV_VAR_NAME.fullmatch(value):
        raise ValueError("not an environment variable name (A-Z, 0-9, _): a *_env key names "
                         "the variable that holds the secret, never the secret itself")
    return value


HttpUrl = Annotated[str, _url("http", "https")]


def _one_saga(path: str) -> str:
    # Without it every retry would POST the same URL, whichever saga it was meant for.
    if not path.startswith("/") or "{saga_id}" not in path:
        raise ValueError("expected a path starting with / that names {saga_id}")
    return path


EnvVar = Annotated[str, AfterValidator(_env_var_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Minutes = Annotated[float, Field(ge=0)]


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return value


def _link_pattern(value: str) -> str:
    """A link with exactly one ``{}``, the id it is filled with (``{{``/``}}``: a literal
    brace): checked here, so a bad one stops the run at load, not in a pytest hook."""
    import string

    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a link pattern ({exc}): write {{}} where the id goes, "
                         "{{ and }} for a literal brace") from None
    if fields != [("", "", None)]:
        found = ", ".join("{" + name + (f"!{conversion}" if conversion else "")
                          + (f":{spec}" if spec else "") + "}"
                          for name, spec, conversion in fields)
        raise ValueError(f"expected exactly one {{}} placeholder (the id), found "
                         f"{found or 'none'}")
    parts = urlsplit(value.format("id"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL with {} where the id goes")
    secret = secret_in_url(value)
    if secret:
        raise ValueError(f"{secret}: a link is shown in every report")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc})") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


def _log_file_template(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("not an absolute path")
    if "{service}" not in value:
        raise ValueError("the path must name the service as {service} (each service has "
                         "its own file), e.g. /var/log/unibazzar/{service}.log")
    return value


# ---- impact: the share of each service's requests that fail (scope-and-impact) -------------
def _query_template(value: str) -> str:
    # Without them every service would read the same number, over a window the message
    # would not state truly.
    missing = [token for token in ("{service}", "{window}") if token not in value]
    if missing:
        raise ValueError(f"the query must name {' and '.join(missing)} (filled with the "
                         "service's label and the window, e.g. 5m)")
    return value


QueryTemplate = Annotated[str, AfterValidator(_query_template)]

