"""The local stack's moto server answers only requests signed with the stack's key (issue 10, finding 7).

Given a moto server started as the local stack starts it, when boto3 signs with the stack's key,
then S3, SQS and DynamoDB work and presigned links work until they expire; when a request is
unsigned, signed with another key, or a presigned link has expired, then it is refused with 403
— so the files bucket (batch CSVs hold every device secret) is not readable by anyone else.
"""

from __future__ import annotations

import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.moto_auth import TOKEN_HEADER
from infra.local.moto_server import MotoServer

SECRET = "the-stacks-own-key"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer("127.0.0.1", log_path=tmp_path_factory.mktemp("moto") / "moto.log", secret_key=SECRET)
    server.start()
    yield server
    server.stop()


def client(moto, service: str, secret: str = SECRET):
    return boto3.client(
        service,
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="fleetbox-local",
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def bucket(moto):
    s3 = client(moto, "s3")
    s3.create_bucket(Bucket="files")
    s3.put_object(Bucket="files", Key="batches/b1/out.csv", Body=b"ProductId,DeviceName,DevicePsk\nP,d,secret==\n")
    s3.put_object(Bucket="files", Key="odd name/ä+b.txt", Body=b"x")
    return "files"


def test_the_stacks_key_works_for_every_service(moto, bucket):
    s3 = client(moto, "s3")
    assert s3.get_object(Bucket=bucket, Key="batches/b1/out.csv")["Body"].read().startswith(b"ProductId")
    assert s3.get_object(Bucket=bucket, Key="odd name/ä+b.txt")["Body"].read() == b"x"
    sqs = client(moto, "sqs")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert client(moto, "dynamodb").list_tables()["TableNames"] == []


def test_unsigned_and_foreign_requests_are_refused(moto, bucket):
    # an unsigned GET of the CSV (what the finding did)
    plain = requests.get(f"{moto.endpoint}/{bucket}/batches/b1/out.csv", timeout=10)
    assert plain.status_code == 403 and b"secret==" not in plain.content
    # a request signed with any other key
    with pytest.raises(ClientError) as exc:
        client(moto, "s3", secret="testing").get_object(Bucket=bucket, Key="batches/b1/out.csv")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError):
        client(moto, "dynamodb", secret="testing").list_tables()
    # moto's own API (state dumps, recorder) needs the stack's token
    assert requests.get(f"{moto.endpoint}/moto-api/data.json", timeout=10).status_code == 403
    assert requests.post(f"{moto.endpoint}/moto-api/recorder/stop-recording", timeout=10).status_code == 403
    ok = requests.post(f"{moto.endpoint}/moto-api/recorder/stop-recording", timeout=10, headers={TOKEN_HEADER: SECRET})
    assert ok.status_code == 200


def test_presigned_links_work_until_they_expire(moto, bucket):
    s3 = client(moto, "s3")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "batches/b1/out.csv"}, ExpiresIn=60)
    assert requests.get(url, timeout=10).status_code == 200
    tampered = url.replace("out.csv", "other.csv")
    assert requests.get(tampered, timeout=10).status_code == 403
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "uploads/fw.bin"}, ExpiresIn=60)
    assert requests.put(put, data=b"firmware", timeout=10).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="uploads/fw.bin")["Body"].read() == b"firmware"
    short = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "batches/b1/out.csv"}, ExpiresIn=1)
    time.sleep(2.1)  # the behaviour under test: a link signed for 1 s must have expired
    expired = requests.get(short, timeout=10)
    assert expired.status_code == 403 and b"expired" in expired.content
