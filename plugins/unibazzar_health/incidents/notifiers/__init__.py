"""The notifiers, one module each behind base.Notifier, imported only when the environment
configures them. Adding one: a module with ``build(config, secret) -> Notifier``, its
section in settings.Notify, and its name in ORDER."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unibazzar_health.config.incident import Notify
    from unibazzar_health.incidents.notifiers.base import Notifier, SecretLookup

# The order deliveries of one message go out in: the page first, the chat, the ticket,
# then whatever listens on the webhook.
ORDER = ("pagerduty", "slack", "ticket", "webhook")


def build_all(notify: Notify, secret: SecretLookup) -> list[Notifier]:
    """Every configured notifier, built (and so validated); raises base.ConfigError with
    the key under ``notify.<name>``."""
    from unibazzar_health.incidents.notifiers.base import ConfigError

    built = []
    for name in ORDER:
        config: Any = getattr(notify, name)
        if config is None:
            continue
        module = import_module(f"unibazzar_health.incidents.notifiers.{name}")
        try:
            built.append(module.build(config, secret))
        except ConfigError as exc:
            raise ConfigError(f"notify.{name}.{exc.key}", exc.value, exc.reason) from None
    return built


def kinds_of(name: str) -> frozenset[str]:
    """The message kinds notifier ``name`` takes, read from its class (no secret needed)."""
    kinds: frozenset[str] = import_module(
        f"unibazzar_health.incidents.notifiers.{name}").NOTIFIER.kinds
    return kinds
