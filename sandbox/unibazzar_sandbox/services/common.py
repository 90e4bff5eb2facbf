"""What every stand-in service shares: secrets from its environment, a log file the
Kubernetes emulator serves as pod logs, a threaded HTTP server on loopback, and its
customers' request counts in CloudWatch (traffic.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from flask import Flask

from unibazzar_sandbox import traffic
from unibazzar_sandbox.layout import HOST, PORTS, Layout


def secret(name: str) -> str:
    return os.environ[name]


def layout() -> Layout:
    return Layout.from_env()


def make_logger(service: str) -> logging.Logger:
    logs = layout().logs
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / f"{service}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger(service)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def app_for(service: str) -> Flask:
    app = Flask(service)

    @app.get("/health")
    def health() -> dict[str, Any]:
        # Liveness only: a dependency's outage shows in the checks that use it.
        return {"status": "ok", "service": service}

    return app


def run(app: Flask, service: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # What its load balancer would count of its customers' requests (traffic.py).
    keys = {name: secret(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    threading.Thread(target=traffic.publish_forever, args=(service, layout(), keys),
                     name="traffic", daemon=True).start()
    app.run(host=HOST, port=PORTS[service], threaded=True, use_reloader=False)
