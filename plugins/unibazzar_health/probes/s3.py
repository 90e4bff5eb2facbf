"""S3: a canary object's put/get/delete round trip, under the canary prefix only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from unibazzar_health.probes import timed
from unibazzar_health.probes.aws import AwsTarget, call, client, explain


@dataclass(frozen=True)
class RoundTrip:
    bucket: str
    bucket_exists: bool
    key: str | None
    put_ms: float | None
    get_ms: float | None
    delete_ms: float | None
    content_matches: bool
    left_behind: bool


def head_bucket(target: AwsTarget, bucket: str) -> bool:
    """Whether ``bucket`` exists; raises when S3 does not answer."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        call("s3", target, "s3", f"bucket {bucket}", lambda s3: s3.head_bucket(Bucket=bucket))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise explain(exc, "s3", f"bucket {bucket}", target) from None
    except BotoCoreError as exc:
        raise explain(exc, "s3", f"bucket {bucket}", target) from None
    return True


def canary_round_trip(target: AwsTarget, bucket: str, prefix: str) -> RoundTrip:
    from botocore.exceptions import BotoCoreError, ClientError

    if not head_bucket(target, bucket):
        return RoundTrip(bucket, False, None, None, None, None, False, False)
    s3 = client("s3", target)
    where = f"bucket {bucket}"

    key = f"{prefix}{uuid.uuid4().hex}.txt"
    body = f"unibazzar health canary {key}".encode()
    put_ms = get_ms = delete_ms = None
    # From the moment the put is sent: S3 may store the object even if its answer is lost,
    # and deleting a key that does not exist is harmless.
    written = True
    try:
        with timed() as t:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        put_ms = t.ms
        with timed() as t:
            read = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        get_ms = t.ms
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, "s3", where, target) from None
    finally:
        # The canary never outlives the probe, whatever failed above.
        if written:
            try:
                with timed() as t:
                    s3.delete_object(Bucket=bucket, Key=key)
                delete_ms, written = t.ms, False
            except (BotoCoreError, ClientError):
                pass
    return RoundTrip(bucket, True, key, put_ms, get_ms, delete_ms, read == body, written)
