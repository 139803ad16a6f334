"""The local stack's moto patch (infra/local/moto_fast.py): transactions stay all-or-nothing.

Given the local moto server, when a transaction that puts a new item and updates an existing
one is cancelled by a third operation's failed condition, then neither change is visible and the
cancellation reasons name the failed operation; a transaction that passes applies everything.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.local.moto_server import MotoServer


@pytest.fixture()
def ddb(tmp_path):
    server = MotoServer("127.0.0.1", log_path=tmp_path / "moto.log", secret_key="test-secret")
    server.start()
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="test-secret",
        )
        client.create_table(
            TableName="t",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        yield client
    finally:
        server.stop()


def item(client, sk: str):
    return client.get_item(TableName="t", Key={"pk": {"S": "p"}, "sk": {"S": sk}}, ConsistentRead=True).get("Item")


def test_a_cancelled_transaction_changes_nothing(ddb):
    ddb.put_item(TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": "old"}, "n": {"N": "1"}})
    ddb.put_item(TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": "taken"}})
    ops = [
        {
            "Put": {
                "TableName": "t",
                "Item": {"pk": {"S": "p"}, "sk": {"S": "new"}},
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        },
        {
            "Update": {
                "TableName": "t",
                "Key": {"pk": {"S": "p"}, "sk": {"S": "old"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {
            "Put": {
                "TableName": "t",
                "Item": {"pk": {"S": "p"}, "sk": {"S": "taken"}, "x": {"S": "overwrite"}},
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        },
    ]
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=ops)
    reasons = [r["Code"] for r in exc.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert item(ddb, "new") is None
    assert item(ddb, "old")["n"] == {"N": "1"}
    assert "x" not in item(ddb, "taken")
    ddb.transact_write_items(TransactItems=ops[:2])
    assert item(ddb, "new") is not None and item(ddb, "old")["n"] == {"N": "2"}
