"""The notifiers, one module each behind base.Notifier, imported only when the environment
configures them.

Adding one: a module (or package) of its name here that owns everything about it — its
settings model ``SETTINGS`` (its ``[notify.<name>]`` table; a pydantic model on
config.fields._Section), ``build(settings, secret) -> Notifier`` and its class ``NOTIFIER``
(what it takes, read without a secret) — and its name in NOTIFIERS, the one line that
registers it. Nothing else names a notifier: config/ keeps the tables as written, and
incidents/config.py validates each with its owner's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from unibazzar_health.incidents.notifiers.base import ConfigError, Notifier, SecretLookup

if TYPE_CHECKING:
    from pydantic import BaseModel

# Every notifier, in the order deliveries of one message go out in: the page first, the
# chat, the ticket, then whatever listens on the webhook.
NOTIFIERS = ("pagerduty", "slack", "ticket", "webhook")


def module_of(name: str) -> ModuleType:
    """The module of notifier ``name`` (one of NOTIFIERS), imported on first use."""
    return import_module(f"{__name__}.{name}")


def settings_model(name: str) -> type[BaseModel]:
    """The model notifier ``name``'s ``[notify.<name>]`` table is validated with."""
    model: type[BaseModel] = module_of(name).SETTINGS
    return model


def build_all(settings: Mapping[str, Any], secret: SecretLookup) -> list[Notifier]:
    """Every configured notifier (``settings``: its validated settings, by name), built in
    NOTIFIERS' order (and so validated against its secrets); raises base.ConfigError with
    the key under ``notify.<name>``."""
    built = []
    for name in NOTIFIERS:
        if name not in settings:
            continue
        try:
            built.append(module_of(name).build(settings[name], secret))
        except ConfigError as exc:
            raise ConfigError(f"notify.{name}.{exc.key}", exc.value, exc.reason) from None
    return built


def kinds_of(name: str) -> frozenset[str]:
    """The message kinds notifier ``name`` takes, read from its class (no secret needed)."""
    kinds: frozenset[str] = module_of(name).NOTIFIER.kinds
    return kinds
