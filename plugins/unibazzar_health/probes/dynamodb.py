"""DynamoDB table status through DescribeTable, and its capacity use through CloudWatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unibazzar_health.probes import FailureKind, ProbeError, Stopwatch
from unibazzar_health.probes.aws import AwsTarget, call, explain


@dataclass(frozen=True)
class TableStatus:
    table: str
    exists: bool
    status: str | None
    index_statuses: dict[str, str]
    billing_mode: str | None
    read_capacity: int | None
    write_capacity: int | None
    item_count: int | None
    elapsed_ms: float
    # Provisioned (read, write) capacity units of each global secondary index; 0 or None:
    # on demand.
    index_capacity: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    # The primary key: each attribute's name and type (S, N or B), hash key first.
    key: dict[str, str] = field(default_factory=dict)


def describe_table(target: AwsTarget, table: str) -> TableStatus:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table} ({target.region})"
    took = Stopwatch()
    try:
        answer = call("dynamodb", target, "dynamodb", where,
                      lambda dynamodb: dynamodb.describe_table(TableName=table)["Table"],
                      timer=took)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return TableStatus(table, False, None, {}, None, None, None, None, took.ms)
        raise explain(exc, "dynamodb", where, target) from None
    except BotoCoreError as exc:
        raise explain(exc, "dynamodb", where, target) from None
    throughput = answer.get("ProvisionedThroughput", {})
    indexes = answer.get("GlobalSecondaryIndexes", [])
    return TableStatus(
        table=table,
        exists=True,
        status=answer.get("TableStatus"),
        index_statuses={i["IndexName"]: i.get("IndexStatus", "ACTIVE") for i in indexes},
        billing_mode=answer.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        read_capacity=throughput.get("ReadCapacityUnits"),
        write_capacity=throughput.get("WriteCapacityUnits"),
        item_count=answer.get("ItemCount"),
        elapsed_ms=took.ms,
        index_capacity={i["IndexName"]: _throughput(i) for i in indexes},
        key=_key(answer),
    )


def _key(answer: dict[str, Any]) -> dict[str, str]:
    types = {a["AttributeName"]: a["AttributeType"]
             for a in answer.get("AttributeDefinitions", [])}
    ordered = sorted(answer.get("KeySchema", []), key=lambda k: k.get("KeyType") != "HASH")
    return {k["AttributeName"]: types.get(k["AttributeName"], "S") for k in ordered}


def _throughput(index: dict[str, Any]) -> tuple[int | None, int | None]:
    throughput = index.get("ProvisionedThroughput", {})
    return throughput.get("ReadCapacityUnits"), throughput.get("WriteCapacityUnits")


@dataclass(frozen=True)
class CapacityUse:
    """What the table and each index ("" is the table) used over the window, from
    CloudWatch's AWS/DynamoDB metrics: the busiest minute's consumed units per second, and
    throttle events (requests refused for want of capacity)."""

    window_minutes: float
    read_peak: dict[str, float] = field(default_factory=dict)
    write_peak: dict[str, float] = field(default_factory=dict)
    read_throttles: dict[str, int] = field(default_factory=dict)
    write_throttles: dict[str, int] = field(default_factory=dict)


_METRICS = {"read_peak": "ConsumedReadCapacityUnits", "write_peak": "ConsumedWriteCapacityUnits",
            "read_throttles": "ReadThrottleEvents", "write_throttles": "WriteThrottleEvents"}


def capacity_use(target: AwsTarget, table: str, indexes: list[str],
                 window_minutes: float) -> CapacityUse:
    """One GetMetricData call: per minute over the window, for the table and its indexes."""
    from datetime import UTC, datetime, timedelta

    from botocore.exceptions import BotoCoreError, ClientError

    where = f"CloudWatch AWS/DynamoDB metrics of table {table} ({target.region})"
    names = ["", *indexes]
    queries, wanted = [], {}
    for n, name in enumerate(names):
        dimensions = [{"Name": "TableName", "Value": table}]
        if name:
            dimensions.append({"Name": "GlobalSecondaryIndexName", "Value": name})
        for field_name, metric in _METRICS.items():
            query_id = f"q{n}_{field_name}"
            wanted[query_id] = (field_name, name)
            queries.append({"Id": query_id, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": "AWS/DynamoDB", "MetricName": metric,
                           "Dimensions": dimensions},
                "Period": 60, "Stat": "Sum"}})
    end = datetime.now(UTC)
    try:
        answer = call("cloudwatch", target, "cloudwatch", where, lambda cloudwatch:
                      cloudwatch.get_metric_data(
                          MetricDataQueries=queries,
                          StartTime=end - timedelta(minutes=window_minutes), EndTime=end))
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, "cloudwatch", where, target) from None
    found: dict[str, dict[str, float]] = {f: {} for f in _METRICS}
    for result in answer.get("MetricDataResults", []):
        field_name, name = wanted.get(result["Id"], ("", ""))
        values = [float(v) for v in result.get("Values", [])]
        if not field_name or not values:
            continue
        if field_name.endswith("_peak"):
            found[field_name][name] = round(max(values) / 60, 3)  # units per second
        else:
            found[field_name][name] = sum(values)
    return CapacityUse(
        window_minutes=window_minutes, read_peak=found["read_peak"],
        write_peak=found["write_peak"],
        read_throttles={k: int(v) for k, v in found["read_throttles"].items()},
        write_throttles={k: int(v) for k, v in found["write_throttles"].items()})


def get_item(target: AwsTarget, table: str, key: dict[str, str]) -> dict[str, str] | None:
    """One item by its (string) key, strongly consistent, as plain strings; None if absent."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table} ({target.region})"
    try:
        answer = call("dynamodb", target, "dynamodb", where, lambda dynamodb: dynamodb.get_item(
            TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True))
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, "dynamodb", where, target) from None
    item = answer.get("Item")
    if item is None:
        return None
    return {name: str(next(iter(value.values()))) for name, value in item.items()}


# A key no item has (per attribute type): what the data-plane probes read and fail to update.
_PROBE_VALUES: dict[str, Any] = {"S": "unibazzar-health-probe", "N": "-1e125",
                                 "B": b"unibazzar-health-probe"}


def _probe_key(table: TableStatus) -> dict[str, dict[str, Any]]:
    return {name: {kind: _PROBE_VALUES.get(kind, _PROBE_VALUES["S"])}
            for name, kind in (table.key or {"listing_id": "S"}).items()}


def serves_reads(target: AwsTarget, table: TableStatus) -> float:
    """One strongly consistent GetItem of a key no item has: the milliseconds the table
    took to serve a read (whatever DescribeTable's status says)."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table.table} ({target.region}): read"
    took = Stopwatch()
    try:
        call("dynamodb", target, "dynamodb", where, lambda dynamodb: dynamodb.get_item(
            TableName=table.table, Key=_probe_key(table), ConsistentRead=True), timer=took)
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, "dynamodb", where, target) from None
    return round(took.ms, 1)


def serves_writes(target: AwsTarget, table: TableStatus) -> float:
    """An UpdateItem of a key no item has, on a condition no item can meet: DynamoDB takes it
    through its write path and refuses it (ConditionalCheckFailed), so nothing is written.
    The milliseconds it took; a ProbeError where the write path itself failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table.table} ({target.region}): write"
    key = _probe_key(table)
    first = next(iter(key))
    took = Stopwatch()

    def write(dynamodb: Any) -> None:
        dynamodb.update_item(
            TableName=table.table, Key=key,
            UpdateExpression="SET #probe = :probe",
            # Contradictory: refused whether or not such an item exists.
            ConditionExpression="attribute_exists(#key) AND attribute_not_exists(#key)",
            ExpressionAttributeNames={"#probe": "unibazzar_health_probe", "#key": first},
            ExpressionAttributeValues={":probe": {"S": "never written"}})

    try:
        call("dynamodb", target, "dynamodb", where, write, timer=took)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return round(took.ms, 1)
        raise explain(exc, "dynamodb", where, target) from None
    except BotoCoreError as exc:
        raise explain(exc, "dynamodb", where, target) from None
    # Applied, which no table can: say so rather than call it served.
    raise ProbeError("dynamodb", where, "a conditional update that can never apply was applied",
                     target.deadline, kind=FailureKind.UNEXPECTED_ANSWER)
