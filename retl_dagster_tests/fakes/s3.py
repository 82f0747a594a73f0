"""S3 for the tests: moto's server (`moto_server`, an emulator of S3's HTTP API) started by
.ci/start_moto.sh, whose endpoint is `RETL_TEST_S3_URL`. The destination reaches it with the
real client stack (s3fs -> aiobotocore -> botocore), signed requests over loopback HTTP; each
test gets a bucket of its own.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

S3_URL = os.environ.get("RETL_TEST_S3_URL")
ACCESS_KEY_ID = "AKIARETLTESTKEY00001"
SECRET_ACCESS_KEY = "retl-s3-secret-do-not-log"
"""moto takes any credentials; this one is distinctive, so a test can look for it in logs."""
REGION = "us-east-1"


@functools.cache
def client() -> Any:
    """A boto3 S3 client of the emulator (the tests' own view of the bucket; made once, as
    botocore takes a while to load its model of S3)."""
    import boto3

    assert S3_URL, "no S3: export RETL_TEST_S3_URL=$(bash .ci/start_moto.sh)"
    return boto3.client(
        "s3",
        endpoint_url=S3_URL,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )


@contextmanager
def fresh_bucket() -> Iterator[str]:
    """A new, empty bucket on the emulator; yields its name and deletes it with its objects."""
    s3 = client()
    name = f"retl-test-{secrets.token_hex(5)}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=obj["Key"])
        s3.delete_bucket(Bucket=name)


def keys(bucket: str, prefix: str = "") -> list[str]:
    """Every object key in the bucket under `prefix`, sorted."""
    s3 = client()
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(out)


def get(bucket: str, key: str) -> bytes:
    body: bytes = client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body
