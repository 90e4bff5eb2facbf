"""The platform's services, by the names the runbook, the catalog, the markers and the
environment file use. Plain typing, nothing else: the plugin loads it in every pytest run
(its entry point), where the environment's settings (pydantic) may never be needed."""

from __future__ import annotations

from typing import Literal, get_args

ServiceName = Literal["auth-service", "listing-service", "order-service", "ai-service"]
SERVICES: tuple[str, ...] = get_args(ServiceName)
