"""Diagnostic codes of forwarding failures (SPEC §5): the spec's, plus one per forwarder kind."""
from __future__ import annotations

from ..services.device_logs import (FORWARD_THIRD_NOT_RESPONDING, FORWARD_THIRD_SYSTEM_ERR, PAYLOAD_NO_FIELD,
                                    PAYLOAD_NOT_JSON, RULE_PROCESS_SQL_ERR, RULE_REPUB_SYSTEM_ERR)

FORWARD_SQS_ERR = "Forward_SQS_Err"
FORWARD_SNS_ERR = "Forward_SNS_Err"
FORWARD_KINESIS_ERR = "Forward_Kinesis_Err"
FORWARD_DYNAMODB_ERR = "Forward_DynamoDB_Err"
FORWARD_LAMBDA_ERR = "Forward_Lambda_Err"
FORWARD_S3_ERR = "Forward_S3_Err"
#: the queue of forward jobs refused a message (the uplink recorded it as a dead letter instead)
FORWARD_QUEUE_ERR = "Forward_Queue_Err"

__all__ = ["FORWARD_THIRD_NOT_RESPONDING", "FORWARD_THIRD_SYSTEM_ERR", "PAYLOAD_NO_FIELD", "PAYLOAD_NOT_JSON",
           "RULE_PROCESS_SQL_ERR", "RULE_REPUB_SYSTEM_ERR", "FORWARD_SQS_ERR", "FORWARD_SNS_ERR",
           "FORWARD_KINESIS_ERR", "FORWARD_DYNAMODB_ERR", "FORWARD_LAMBDA_ERR", "FORWARD_S3_ERR",
           "FORWARD_QUEUE_ERR"]
