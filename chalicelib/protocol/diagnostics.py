"""Cloud diagnostic codes (SPEC §5): what a device's diagnostic log says went wrong, spelled once.

The first block is the spec's list; then the failures the spec asks to be explained without
giving a code, and one code per rule-forwarder kind.  Every layer that writes a diagnostic
(the broker, the uplink pipeline, the delivery engine) names its code from here.
"""

from __future__ import annotations

DEV_CONN_SYSTEM_ERR = "Dev_Conn_System_Err"
SUBSCRIBE_TOPIC_UNAUTHORIZED = "Subscribe_Topic_Unauthorized"
DEV_PUB_UNAUTHORIZED = "Dev_Pub_Unauthorized"
DEV_PUB_REACH_MAX_LIMIT = "Dev_Pub_Reach_Max_Limit"
DEV_PUB_PAYLOAD_TOOLONG = "Dev_Pub_Payload_TooLong"
PUB_TO_DEV_NO_SUBSCRIBER = "Pub_To_Dev_No_Subscriber"
PAYLOAD_NOT_JSON = "Payload_Not_JSON"
PAYLOAD_NO_FIELD = "Payload_No_Field"
RULE_PROCESS_SQL_ERR = "Rule_Process_SQL_Err"
FORWARD_THIRD_NOT_RESPONDING = "Forward_Third_Not_Responding"
FORWARD_THIRD_SYSTEM_ERR = "Forward_Third_System_Err"
RULE_REPUB_SYSTEM_ERR = "Rule_Repub_System_Err"

#: an MQTT CONNECT of a known device was refused (bad/expired password, disabled, malformed)
DEV_CONN_AUTH_FAILED = "Dev_Conn_Auth_Failed"
#: a dynamic-registration request naming a known device was refused
DEV_REGISTER_FAILED = "Dev_Register_Failed"
#: a thing-model value failed validation ("brightness: 120 above max 100")
THING_MODEL_INVALID = "Thing_Model_Invalid"

# one per rule-forwarder kind (the spec's "one code per forwarder kind")
FORWARD_SQS_ERR = "Forward_SQS_Err"
FORWARD_SNS_ERR = "Forward_SNS_Err"
FORWARD_KINESIS_ERR = "Forward_Kinesis_Err"
FORWARD_DYNAMODB_ERR = "Forward_DynamoDB_Err"
FORWARD_LAMBDA_ERR = "Forward_Lambda_Err"
FORWARD_S3_ERR = "Forward_S3_Err"
#: the queue of forward jobs refused a message (the uplink recorded it as a dead letter instead)
FORWARD_QUEUE_ERR = "Forward_Queue_Err"
