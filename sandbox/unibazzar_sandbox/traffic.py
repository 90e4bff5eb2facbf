"""What a load balancer in front of each stand-in counts, in moto's CloudWatch: the
AWS/ApplicationELB metrics RequestCount and HTTPCode_Target_5XX_Count of its target group,
as the checks' [impact] source reads them in production.

The sandbox has no customers: each stand-in stands in for its own, a steady
CUSTOMERS_PER_MINUTE requests, and publishes their counts every PUBLISH_S seconds. The share
of them it fails is faults/<service>.error-share (a number from 0 to 1), the file the
game days write. The checks' own requests are not counted: in the sandbox they would be the
only real traffic, and the share would depend on which checks ran last.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from unibazzar_sandbox.layout import HOST, PORTS, Layout

NAMESPACE = "AWS/ApplicationELB"
LOAD_BALANCER = "app/unibazzar-sandbox/5e1a0c7d2b3f4a69"
CUSTOMERS_PER_MINUTE = 600
PUBLISH_S = 10.0


def target_group(service: str) -> str:
    """As AWS names one: targetgroup/<name>/<16 hex digits>, stable per service."""
    name = service.encode()
    return f"targetgroup/{service}/{zlib.crc32(name):08x}{zlib.crc32(name[::-1]):08x}"


def dimensions(service: str) -> list[dict[str, str]]:
    return [{"Name": "LoadBalancer", "Value": LOAD_BALANCER},
            {"Name": "TargetGroup", "Value": target_group(service)}]


def share_file(layout: Layout, service: str) -> Any:
    return layout.faults / f"{service}.error-share"


def error_share(layout: Layout, service: str) -> float:
    """The share of its customers' requests the stand-in fails now (0 without a game day)."""
    try:
        return min(1.0, max(0.0, float(share_file(layout, service).read_text().strip())))
    except (OSError, ValueError):
        return 0.0


def put(cloudwatch: Any, service: str, requests: int, share: float, at: datetime) -> None:
    """One datapoint of each count, stamped ``at``."""
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
        {"MetricName": name, "Unit": "Count", "Value": float(value), "Timestamp": at,
         "Dimensions": dimensions(service)}
        for name, value in (("RequestCount", requests),
                            ("HTTPCode_Target_5XX_Count", round(requests * share)))])


def backfill(cloudwatch: Any, service: str, share: float, minutes: int) -> None:
    """The last ``minutes`` as the load balancer counted them had the share been failing
    all along: a game day's incident is under way already, as a backlog's events are
    stamped over the minutes before it (faults.py)."""
    now = datetime.now(UTC)
    for minute in range(minutes):
        put(cloudwatch, service, CUSTOMERS_PER_MINUTE, share,
            now - timedelta(minutes=minute, seconds=30))


def publish_forever(service: str, layout: Layout, secrets: dict[str, str]) -> None:
    """Run by each stand-in on a thread of its own: its customers' counts, every PUBLISH_S.
    moto down or reset meanwhile costs a datapoint, never the service (nothing is logged:
    an error line would count in the checks' error rate)."""
    import boto3
    from botocore.config import Config

    cloudwatch = boto3.client(
        "cloudwatch", endpoint_url=f"http://{HOST}:{PORTS['moto']}", region_name="eu-west-1",
        aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=2, read_timeout=2,
                      retries={"mode": "standard", "total_max_attempts": 1}))
    per_tick = round(CUSTOMERS_PER_MINUTE * PUBLISH_S / 60)
    while True:
        time.sleep(PUBLISH_S)
        with contextlib.suppress(Exception):  # the next tick tries again
            put(cloudwatch, service, per_tick, error_share(layout, service), datetime.now(UTC))
