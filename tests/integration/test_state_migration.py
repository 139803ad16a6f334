"""A state directory written by the stack before DynamoDB Local (tables kept in moto's recording)
keeps its tables: the recorded DynamoDB requests move out of the recording, in order, and are
re-issued into the new engine once.  Here the target engine is moto's ``mock_aws`` (DynamoDB
Local runs in the e2e suite); the recording lines have moto's recorder format.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
from moto import mock_aws

from infra.local.persistence import StateDir, replay_dynamodb

SCOPE = "Credential=AKIDEXAMPLE/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"


def recorded(service: str, target: str, body: dict | str, url: str = "http://127.0.0.1:5000/") -> dict:
    return {
        "module": "moto",
        "method": "POST",
        "url": url,
        "headers": {"Authorization": "AWS4-HMAC-SHA256 " + SCOPE.format(service=service), "X-Amz-Target": target},
        "body": body if isinstance(body, str) else json.dumps(body),
    }


TABLE = {
    "TableName": "fleetbox-local-products",
    "AttributeDefinitions": [{"AttributeName": "product_id", "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": "product_id", "KeyType": "HASH"}],
    "BillingMode": "PAY_PER_REQUEST",
}


def test_an_old_recordings_tables_move_into_the_new_engine_once(tmp_path: Path):
    state = StateDir(tmp_path / "state")
    state.prepare()
    lines = [
        recorded("dynamodb", "DynamoDB_20120810.CreateTable", TABLE),
        recorded(
            "dynamodb",
            "DynamoDB_20120810.PutItem",
            {"TableName": TABLE["TableName"], "Item": {"product_id": {"S": "P1"}, "name": {"S": "Lamp"}}},
        ),
        recorded(
            "dynamodb",
            "DynamoDB_20120810.GetItem",
            {"TableName": TABLE["TableName"], "Key": {"product_id": {"S": "P1"}}},
        ),
        recorded(
            "dynamodb",
            "DynamoDB_20120810.UpdateItem",
            {
                "TableName": TABLE["TableName"],
                "Key": {"product_id": {"S": "P1"}},
                "UpdateExpression": "SET #n = :n",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":n": {"S": "Lamp 2"}},
            },
        ),
        recorded("sqs", "AmazonSQS.CreateQueue", {"QueueName": "fleetbox-local-jobs"}),
    ]
    state.recording.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    # When the recording is compacted (as every start does, before moto replays it)
    kept, dropped = state.compact_recording()

    # Then moto keeps only its own state-changing requests, and the table writes wait, in order
    assert (kept, dropped) == (1, 1)
    assert [json.loads(line)["headers"]["X-Amz-Target"] for line in state.recording.read_text().splitlines()] == [
        "AmazonSQS.CreateQueue"
    ]
    pending = state.pending_table_migration()
    assert [e["headers"]["X-Amz-Target"].rpartition(".")[2] for e in pending] == [
        "CreateTable",
        "PutItem",
        "UpdateItem",
    ]

    # And re-issued into the new engine they rebuild the table with its latest value
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        assert replay_dynamodb(client, pending) == 3
        item = client.get_item(TableName=TABLE["TableName"], Key={"product_id": {"S": "P1"}})["Item"]
        assert item["name"] == {"S": "Lamp 2"}
    state.migration_done()
    assert state.pending_table_migration() == []
    # And a second compaction finds nothing more to move
    assert state.compact_recording() == (1, 0)
    assert state.pending_table_migration() == []
