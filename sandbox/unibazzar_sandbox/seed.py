"""Canary data and schemas, put in after each component starts. Idempotent."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from unibazzar_sandbox.layout import HOST, PORTS, Layout
from unibazzar_sandbox.vectors import CANARY_DOCUMENTS, DIMENSION, embed

Secrets = dict[str, str]
LISTINGS_TABLE = "unibazzar-listings"
IMAGES_BUCKET = "unibazzar-listing-images"
EVENTS_EXCHANGE = "listing.events"
EVENTS_QUEUE = "search-indexer"
VECTOR_COLLECTION = "listings"
CANARY_EMAIL = "canary@unibazzar.test"
CANARY_LISTING_ID = "canary-listing-0001"
CANARY_LISTING_TITLE = "Canary textbook"
CANARY_ORDER_ID = "order-canary-0001"
WEBHOOK_ID = "order-service"


# A real password hash, at a stand-in's work factor: no check measures the hashing's cost, and
# at 100,000 rounds the canary's three logins were a tenth of a second of CPU per check run
# (about 25 s of every self-test session's).
PBKDF2_ROUNDS = 1_000


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
    return f"pbkdf2${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    return hash_password(password, bytes.fromhex(salt)) == stored and bool(digest)


def _retry(what: str, fn: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def postgresql(layout: Layout, secrets: Secrets) -> None:
    import psycopg
    from psycopg import sql

    admin = f"host={layout.path('postgresql', 'run')} port={PORTS['postgresql']} user=postgres"
    with psycopg.connect(admin + " dbname=postgres", autocommit=True) as conn:
        roles = {
            "auth_service": secrets["UNIBAZZAR_AUTH_DB_PASSWORD"],
            "order_service": secrets["UNIBAZZAR_ORDER_DB_PASSWORD"],
            "unibazzar_health": secrets["UNIBAZZAR_HEALTH_DB_PASSWORD"],
        }
        for role, password in roles.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(role), sql.Literal(password)))
        # The health checks' role reads statistics of every session, and nothing else.
        conn.execute("GRANT pg_monitor TO unibazzar_health")
        for db, owner in (("auth", "auth_service"), ("orders", "order_service")):
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(db), sql.Identifier(owner)))
    with psycopg.connect(admin + " dbname=auth", autocommit=True) as conn:
        conn.execute("SET ROLE auth_service")
        conn.execute("""CREATE TABLE IF NOT EXISTS users (
            id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""")
        conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) ON CONFLICT (email) "
            "DO UPDATE SET password_hash = EXCLUDED.password_hash",
            (CANARY_EMAIL, hash_password(secrets["UNIBAZZAR_CANARY_PASSWORD"])))
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO unibazzar_health")
    with psycopg.connect(admin + " dbname=orders", autocommit=True) as conn:
        conn.execute("SET ROLE order_service")
        conn.execute("""CREATE TABLE IF NOT EXISTS orders (
            id text PRIMARY KEY, user_email text NOT NULL, listing_id text NOT NULL,
            amount_cents integer NOT NULL, currency text NOT NULL DEFAULT 'eur',
            status text NOT NULL, payment_intent_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""")
        conn.execute("""CREATE TABLE IF NOT EXISTS sagas (
            id text PRIMARY KEY, order_id text NOT NULL REFERENCES orders(id),
            state text NOT NULL, step text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""")
        conn.execute(
            "INSERT INTO orders (id, user_email, listing_id, amount_cents, status) "
            "VALUES ('order-canary-0001', %s, %s, 1999, 'paid') ON CONFLICT DO NOTHING",
            (CANARY_EMAIL, CANARY_LISTING_ID))
        conn.execute(
            "INSERT INTO sagas (id, order_id, state, step) VALUES "
            "('saga-canary-0001', 'order-canary-0001', 'completed', 'done') "
            "ON CONFLICT DO NOTHING")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO unibazzar_health")


def rabbitmq(layout: Layout, secrets: Secrets) -> None:
    import pika

    params = pika.ConnectionParameters(
        host=HOST, port=PORTS["rabbitmq"],
        credentials=pika.PlainCredentials("unibazzar", secrets["UNIBAZZAR_RABBITMQ_PASSWORD"]),
        socket_timeout=5, stack_timeout=5, connection_attempts=1)
    connection = _retry("rabbitmq", lambda: pika.BlockingConnection(params), 60)
    try:
        channel = connection.channel()
        channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        channel.queue_declare(EVENTS_QUEUE, durable=True)
        channel.queue_bind(EVENTS_QUEUE, EVENTS_EXCHANGE, routing_key="listing.#")
    finally:
        connection.close()


def aws_client(service: str, secrets: Secrets) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=f"http://{HOST}:{PORTS['moto']}",
                        region_name="eu-west-1",
                        aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"])


def aws(layout: Layout, secrets: Secrets) -> None:
    listings_table(secrets)
    images_bucket(secrets)


def listings_table(secrets: Secrets) -> None:
    """The listings table (created if missing) with the canary listing in it."""
    dynamodb = aws_client("dynamodb", secrets)
    if LISTINGS_TABLE not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=LISTINGS_TABLE,
            AttributeDefinitions=[{"AttributeName": "listing_id", "AttributeType": "S"},
                                  {"AttributeName": "category", "AttributeType": "S"},
                                  {"AttributeName": "created_at", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "listing_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[{
                "IndexName": "by-category",
                "KeySchema": [{"AttributeName": "category", "KeyType": "HASH"},
                              {"AttributeName": "created_at", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}],
            BillingMode="PAY_PER_REQUEST")
    dynamodb.put_item(TableName=LISTINGS_TABLE, Item={
        "listing_id": {"S": CANARY_LISTING_ID}, "category": {"S": "canary"},
        "created_at": {"S": "2026-01-01T00:00:00Z"}, "title": {"S": CANARY_LISTING_TITLE},
        "price_cents": {"N": "1999"}})


def images_bucket(secrets: Secrets) -> None:
    """The images bucket (created if missing) with the canary listing's image in it."""
    s3 = aws_client("s3", secrets)
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if IMAGES_BUCKET not in buckets:
        s3.create_bucket(Bucket=IMAGES_BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket=IMAGES_BUCKET, Key=f"listings/{CANARY_LISTING_ID}/cover.txt",
                  Body=b"canary image")


def vector_db(layout: Layout, secrets: Secrets) -> None:
    import requests

    base = (f"http://{HOST}:{PORTS['vector-db']}/api/v2/tenants/default_tenant/"
            "databases/default_database/collections")
    answer = requests.post(base, json={"name": VECTOR_COLLECTION, "get_or_create": True,
                                       "metadata": {"hnsw:space": "cosine",
                                                    "dimension": DIMENSION}}, timeout=10)
    answer.raise_for_status()
    collection = answer.json()["id"]
    ids = [f"listing-{i:04d}" for i in range(len(CANARY_DOCUMENTS))]
    requests.post(f"{base}/{collection}/upsert", timeout=10, json={
        "ids": ids, "embeddings": [embed(d) for d in CANARY_DOCUMENTS],
        "documents": list(CANARY_DOCUMENTS),
        "metadatas": [{"canary": True} for _ in ids]}).raise_for_status()
    # The canary listing of the listings table too, as the search indexer indexed it: every
    # listing there is searchable (listing.indexing-lag compares the newest of each).
    requests.post(f"{base}/{collection}/upsert", timeout=10, json={
        "ids": [CANARY_LISTING_ID], "embeddings": [embed(CANARY_LISTING_TITLE)],
        "documents": [CANARY_LISTING_TITLE],
        "metadatas": [{"category": "canary"}]}).raise_for_status()


def payments(layout: Layout, secrets: Secrets) -> None:
    import requests

    url = f"http://{HOST}:{PORTS['payments']}/_config/webhooks/{WEBHOOK_ID}"
    requests.post(url, timeout=10, data={
        "url": f"http://{HOST}:{PORTS['order-service']}/webhooks/stripe",
        "secret": secrets["UNIBAZZAR_STRIPE_WEBHOOK_SECRET"],
        "events[]": ["payment_intent.succeeded", "payment_intent.payment_failed"],
    }).raise_for_status()
    canary_payment(layout, secrets)


def canary_payment(layout: Layout, secrets: Secrets) -> None:
    """The canary order is paid: a succeeded payment intent at the provider, its id on the
    order. The emulator starts empty, so after each (re)start a new intent is made."""
    import psycopg
    import requests

    api = f"http://{HOST}:{PORTS['payments']}/v1"
    auth = (secrets["UNIBAZZAR_STRIPE_API_KEY"], "")
    admin = (f"host={layout.path('postgresql', 'run')} port={PORTS['postgresql']} "
             "user=postgres dbname=orders")
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute("SELECT payment_intent_id FROM orders WHERE id = %s",
                           (CANARY_ORDER_ID,)).fetchone()
        if row and row[0]:
            known = requests.get(f"{api}/payment_intents/{row[0]}", auth=auth, timeout=10)
            if known.status_code == 200 and known.json().get("status") == "succeeded":
                return
        method = requests.post(f"{api}/payment_methods", auth=auth, timeout=10, data={
            "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
            "card[exp_year]": "2030", "card[cvc]": "123"})
        method.raise_for_status()
        intent = requests.post(f"{api}/payment_intents", auth=auth, timeout=10, data={
            "amount": "1999", "currency": "eur", "payment_method": method.json()["id"],
            "confirm": "true", "metadata[order_id]": CANARY_ORDER_ID})
        intent.raise_for_status()
        conn.execute("UPDATE orders SET payment_intent_id = %s WHERE id = %s",
                     (intent.json()["id"], CANARY_ORDER_ID))


def search_indexer_consuming(layout: Layout, secrets: Secrets) -> None:
    """listing-service is ready once its search indexer consumes (the management API shows
    consumers about a second late)."""
    import requests

    url = f"http://{HOST}:{PORTS['rabbitmq-management']}/api/queues/%2F/{EVENTS_QUEUE}"
    auth = ("unibazzar", secrets["UNIBAZZAR_RABBITMQ_PASSWORD"])

    def consuming() -> None:
        if requests.get(url, auth=auth, timeout=2).json().get("consumers", 0) < 1:
            raise RuntimeError("the search indexer is not consuming yet")

    _retry("search indexer", consuming, 30)
