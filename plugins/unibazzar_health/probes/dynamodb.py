"""DynamoDB table status through DescribeTable."""

from __future__ import annotations

from dataclasses import dataclass

from unibazzar_health.probes import timed
from unibazzar_health.probes.aws import AwsTarget, client, explain


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


def describe_table(target: AwsTarget, table: str) -> TableStatus:
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table} ({target.region})"
    dynamodb = client("dynamodb", target)
    try:
        with timed() as t:
            answer = dynamodb.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return TableStatus(table, False, None, {}, None, None, None, None, t.ms)
        raise explain(exc, "dynamodb", where, target) from None
    except BotoCoreError as exc:
        raise explain(exc, "dynamodb", where, target) from None
    throughput = answer.get("ProvisionedThroughput", {})
    return TableStatus(
        table=table,
        exists=True,
        status=answer.get("TableStatus"),
        index_statuses={i["IndexName"]: i.get("IndexStatus", "ACTIVE")
                        for i in answer.get("GlobalSecondaryIndexes", [])},
        billing_mode=answer.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        read_capacity=throughput.get("ReadCapacityUnits"),
        write_capacity=throughput.get("WriteCapacityUnits"),
        item_count=answer.get("ItemCount"),
        elapsed_ms=t.ms,
    )


def get_item(target: AwsTarget, table: str, key: dict[str, str]) -> dict[str, str] | None:
    """One item by its (string) key, strongly consistent, as plain strings; None if absent."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"table {table} ({target.region})"
    try:
        answer = client("dynamodb", target).get_item(
            TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True)
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, "dynamodb", where, target) from None
    item = answer.get("Item")
    if item is None:
        return None
    return {name: str(next(iter(value.values()))) for name, value in item.items()}
