"""infra/template.yaml has what issue 6 asks for, for each delivery option."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml

from cfnmodel import REPO_ROOT, Stack, CfnLoader, as_list, statements
from variants import VARIANTS
from variants import main as write_variants

EXPIRED_CODES = ["ExpiredToken", "ExpiredTokenException"]
RELATED_CODES = [
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "RequestExpired",
]
FILTERED_CODES = EXPIRED_CODES + RELATED_CODES + [f"Client.{c}" for c in EXPIRED_CODES + RELATED_CODES]


def one(stack: Stack, type_name: str) -> dict[str, Any]:
    found = stack.resources_of_type(type_name)
    assert len(found) == 1, f"expected one {type_name}, found {sorted(found)}"
    return next(iter(found.values()))


def function(stack: Stack) -> dict[str, Any]:
    return one(stack, "AWS::Serverless::Function")


def role_statements(stack: Stack) -> list[dict[str, Any]]:
    role = stack.resources()["FunctionRole"]["Properties"]
    return [s for policy in role["Policies"] for s in statements(policy["PolicyDocument"])]


def statements_with_action(stack: Stack, action: str) -> list[dict[str, Any]]:
    return [s for s in role_statements(stack) if action in as_list(s["Action"])]


def walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", key, value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


# ---------------------------------------------------------------------------------- the function


def test_is_a_sam_template(template):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert all(spec.get("Description") for spec in template["Parameters"].values())


def test_function_build_and_runtime(stack):
    fn = function(stack)
    props = fn["Properties"]
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert fn["Metadata"]["BuildProperties"]["Binary"] == "tokenwatch-lambda"
    assert props["CodeUri"] == ".."
    assert props["Handler"] == "bootstrap"
    assert props["Runtime"] == "provided.al2023"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == "128"
    assert 120 <= props["Timeout"] <= 900
    assert props["ReservedConcurrentExecutions"] == "10"
    assert props["DeadLetterQueue"] == {"Type": "SQS", "TargetArn": "<AsyncDeadLetterQueue.Arn>"}


def test_build_points_at_the_lambda_binary():
    """CodeUri is the workspace root; the Binary is a bin target of crates/lambda."""
    manifest = REPO_ROOT / "crates" / "lambda" / "Cargo.toml"
    if not manifest.exists():
        pytest.skip("crates/lambda/Cargo.toml is not written yet")
    assert (REPO_ROOT / "Cargo.toml").exists()
    data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    bins = {b["name"] for b in data.get("bin", [])}
    if (manifest.parent / "src" / "main.rs").exists():
        bins.add(data["package"]["name"])
    assert "tokenwatch-lambda" in bins


def test_reserved_concurrency_zero_means_unreserved(template):
    props = function(Stack(template, ReservedConcurrency=0))["Properties"]
    assert "ReservedConcurrentExecutions" not in props


def test_function_logs_json_to_its_own_log_group(stack):
    props = function(stack)["Properties"]
    assert props["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "<FunctionLogGroup>"}
    log_group = stack.resources()["FunctionLogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == "365"
    assert log_group["LogGroupName"] == "/aws/lambda/tokenwatch"
    assert log_group["KmsKeyId"] == "<Key.Arn>"


def test_function_environment_defaults(stack):
    env = function(stack)["Properties"]["Environment"]["Variables"]
    assert env == {
        "TOKENWATCH_NAMESPACE": "TokenWatch",
        "TOKENWATCH_METRICS_MODE": "api",
        "TOKENWATCH_ALERT_TOPIC_ARN": "<AlertTopic>",
        "TOKENWATCH_STATE_TABLE": "<StateTable>",
        "TOKENWATCH_MIN_FAILURES": "3",
        "TOKENWATCH_MIN_SPAN_SECONDS": "300",
        "TOKENWATCH_RENOTIFY_SECONDS": "3600",
        "TOKENWATCH_QUIET_SECONDS": "1800",
        "TOKENWATCH_ERROR_CODES": "ExpiredToken,ExpiredTokenException",
        "TOKENWATCH_MAX_SESSION_SERIES": "50",
        "TOKENWATCH_ENRICHMENT_BUDGET_SECONDS": "10",
        "TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS": "20",
        "RUST_LOG": "info",
    }


def test_metrics_mode_choices(template):
    assert template["Parameters"]["MetricsMode"]["AllowedValues"] == ["api", "emf"]


# ---------------------------------------------------------------------------------- deliveries


def test_each_source_creates_only_its_delivery(template):
    delivery = {
        "eventbridge": {"CloudTrailRule", "CloudTrailRulePermission"},
        "s3": {"IngestQueue", "IngestDeadLetterQueue", "IngestQueuePolicy", "IngestEventSourceMapping",
               "IngestDeadLetterAlarm", "NoRecordsScannedAlarm"},
        "cloudwatch_logs": {"TrailLogsPermission", "TrailLogsSubscription"},
    }
    every = set().union(*delivery.values())
    for source, expected in delivery.items():
        names = set(Stack(template, Source=source, TrailBucketName="b", TrailLogGroupName="g").resources())
        assert names & every == expected, source


def test_eventbridge_rule(template):
    stack = Stack(template)  # the default delivery
    rule = stack.resources()["CloudTrailRule"]["Properties"]
    assert rule["State"] == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"
    assert "EventBusName" not in rule  # the default bus, where CloudTrail events arrive
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    assert pattern["detail"]["errorCode"] == FILTERED_CODES
    assert len(json.dumps(pattern)) < 2048
    (target,) = rule["Targets"]
    assert target["Arn"] == "<Function.Arn>"
    assert target["DeadLetterConfig"]["Arn"] == "<AsyncDeadLetterQueue.Arn>"
    permission = stack.resources()["CloudTrailRulePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == "<CloudTrailRule.Arn>"


def test_filters_follow_the_error_code_parameter(template):
    stack = Stack(template, ExpiredTokenErrorCodes="ExpiredToken,ExpiredTokenException,TokenRefreshRequired")
    codes = stack.resources()["CloudTrailRule"]["Properties"]["EventPattern"]["detail"]["errorCode"]
    assert "TokenRefreshRequired" in codes and "Client.TokenRefreshRequired" in codes


def test_s3_delivery_through_sqs(template):
    stack = Stack(template, Source="s3", TrailBucketName="org-trail-logs", TrailBucketAccountId="444455556666")
    resources = stack.resources()
    mapping = resources["IngestEventSourceMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == "<IngestQueue.Arn>"
    assert mapping["FunctionName"] == "<Function>"
    queue = resources["IngestQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == "<IngestDeadLetterQueue.Arn>"
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 3
    assert queue["VisibilityTimeout"] >= 6 * function(stack)["Properties"]["Timeout"]
    assert queue["KmsMasterKeyId"] == "<Key.Arn>"

    policy = resources["IngestQueuePolicy"]["Properties"]["PolicyDocument"]
    allows = [s for s in statements(policy) if s["Effect"] == "Allow"]
    (s3,) = allows  # no SNS statement without TrailNotificationTopicArn
    assert s3["Principal"] == {"Service": "s3.amazonaws.com"}
    assert s3["Action"] == "sqs:SendMessage"
    assert s3["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::org-trail-logs"
    assert s3["Condition"]["StringEquals"]["aws:SourceAccount"] == "444455556666"
    assert "IngestTopicSubscription" not in resources


def test_s3_bucket_account_defaults_to_this_account(template):
    stack = Stack(template, Source="s3", TrailBucketName="trail")
    policy = stack.resources()["IngestQueuePolicy"]["Properties"]["PolicyDocument"]
    assert statements(policy)[0]["Condition"]["StringEquals"]["aws:SourceAccount"] == "111122223333"


def test_s3_delivery_through_sns_fan_out(template):
    topic = "arn:aws:sns:eu-west-1:444455556666:org-trail-objects"
    stack = Stack(template, Source="s3", TrailBucketName="trail", TrailNotificationTopicArn=topic)
    resources = stack.resources()
    policy = resources["IngestQueuePolicy"]["Properties"]["PolicyDocument"]
    sns = [s for s in statements(policy) if s["Principal"] == {"Service": "sns.amazonaws.com"}]
    assert len(sns) == 1 and sns[0]["Condition"]["ArnEquals"]["aws:SourceArn"] == topic
    subscription = resources["IngestTopicSubscription"]["Properties"]
    assert subscription == {"TopicArn": topic, "Region": "eu-west-1", "Protocol": "sqs", "Endpoint": "<IngestQueue.Arn>"}
    key_principals = [s["Principal"] for s in statements(resources["Key"]["Properties"]["KeyPolicy"])]
    assert {"Service": "sns.amazonaws.com"} in key_principals and {"Service": "s3.amazonaws.com"} in key_principals


def test_cloudwatch_logs_subscription(template):
    stack = Stack(template, Source="cloudwatch_logs", TrailLogGroupName="aws-cloudtrail-logs-1")
    resources = stack.resources()
    subscription = resources["TrailLogsSubscription"]
    props = subscription["Properties"]
    assert props["LogGroupName"] == "aws-cloudtrail-logs-1"
    assert props["DestinationArn"] == "<Function.Arn>"
    clauses = " || ".join(f'($.errorCode = "{code}")' for code in FILTERED_CODES)
    assert props["FilterPattern"] == "{ " + clauses + " }"
    assert len(props["FilterPattern"]) <= 1024
    assert subscription["DependsOn"] == "TrailLogsPermission"
    permission = resources["TrailLogsPermission"]["Properties"]
    assert permission["Principal"] == "logs.amazonaws.com"
    assert permission["SourceArn"] == "arn:aws:logs:us-east-1:111122223333:log-group:aws-cloudtrail-logs-1:*"
    assert permission["SourceAccount"] == "111122223333"


def test_sources_without_their_required_parameter_are_refused(template):
    required = {}
    for rule in template["Rules"].values():
        source = rule["RuleCondition"]["Fn::Equals"][1]
        (assertion,) = rule["Assertions"]
        not_empty = assertion["Assert"]["Fn::Not"][0]["Fn::Equals"]
        assert not_empty[1] == ""
        required[source] = not_empty[0]["Ref"]
    assert required == {"s3": "TrailBucketName", "cloudwatch_logs": "TrailLogGroupName"}


def test_sweep_schedule_sends_the_plain_scheduled_event(stack):
    rule = stack.resources()["SweepRule"]["Properties"]
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == "<Function.Arn>"
    assert not {"Input", "InputPath", "InputTransformer"} & set(target)
    assert stack.resources()["SweepRulePermission"]["Properties"]["SourceArn"] == "<SweepRule.Arn>"


def test_sweep_can_be_switched_off(template):
    resources = Stack(template, SweepSchedule="").resources()
    assert "SweepRule" not in resources and "SweepRulePermission" not in resources


def test_related_codes_mapping(template):
    assert template["Mappings"]["Contract"]["ErrorCodes"]["Related"].split(",") == RELATED_CODES
    assert template["Parameters"]["ExpiredTokenErrorCodes"]["Default"].split(",") == EXPIRED_CODES


# ---------------------------------------------------------------------------------- state, on-call


def test_state_table(stack):
    props = stack.resources()["StateTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": "<Key.Arn>"}
    assert props["TimeToLiveSpecification"]["Enabled"] is True


def test_on_call_topic_is_encrypted_and_alarms_can_publish(stack):
    resources = stack.resources()
    assert resources["AlertTopic"]["Properties"]["KmsMasterKeyId"] == "<Key.Arn>"
    key = resources["Key"]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [s for s in statements(key["KeyPolicy"]) if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(as_list(cloudwatch[0]["Action"]))
    # The function publishes: its role may use the key.
    (use_key,) = [s for s in role_statements(stack) if s.get("Sid") == "UseStackKey"]
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(use_key["Action"]) and use_key["Resource"] == "<Key.Arn>"


def test_email_subscription_is_optional(template):
    assert "AlertEmailSubscription" not in Stack(template).resources()
    subscription = Stack(template, AlertEmail="oncall@example.com").resources()["AlertEmailSubscription"]
    assert subscription["Properties"] == {"TopicArn": "<AlertTopic>", "Protocol": "email", "Endpoint": "oncall@example.com"}


def test_outputs_for_subscriptions_and_cross_account_grants(template):
    outputs = template["Outputs"]
    assert outputs["AlertTopicArn"]["Value"] == {"Ref": "AlertTopic"}
    assert outputs["FunctionRoleArn"]["Value"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert outputs["IngestQueueArn"]["Condition"] == "IsS3Source"


# ---------------------------------------------------------------------------------- alarms, dashboard


def test_alarms_page_the_on_call_topic(stack):
    alarms = stack.resources_of_type("AWS::CloudWatch::Alarm")
    expected = {"IncidentsOpenedAlarm", "ExpiredTokenSpikeAlarm", "FunctionErrorsAlarm", "AsyncDeadLetterAlarm"}
    if stack.params["Source"] == "s3":
        expected |= {"IngestDeadLetterAlarm", "NoRecordsScannedAlarm"}
    assert set(alarms) == expected
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == ["<AlertTopic>"], name
        assert alarm["Properties"].get("AlarmDescription"), name


def test_no_records_alarm_watches_s3_records(template):
    alarm = Stack(template, Source="s3", TrailBucketName="b").resources()["NoRecordsScannedAlarm"]["Properties"]
    assert alarm["MetricName"] == "RecordsScanned"
    assert alarm["Dimensions"] == [{"Name": "Source", "Value": "s3"}]
    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["Period"] * int(alarm["EvaluationPeriods"]) == 6 * 3600
    assert "NoRecordsScannedAlarm" not in Stack(template, Source="s3", TrailBucketName="b", NoRecordsAlarmHours=0).resources()


def test_dashboard_body_is_json_with_the_issue_widgets(stack):
    dashboard = stack.resources()["Dashboard"]["Properties"]
    body = json.loads(dashboard["DashboardBody"])
    titles = {w["properties"].get("title") for w in body["widgets"]}
    for title in [
        "Expired-token errors",
        "Top principals",
        "Top sessions",
        "Credential age at failure (max, seconds)",
        "Incidents opened",
        "Related credential errors by code",
        "Records scanned by source",
        "Malformed records by source",
        "Function invocations, errors, throttles",
        "Function duration (ms)",
        "Dead-letter queues and ingest backlog",
    ]:
        assert title in titles
    text = dashboard["DashboardBody"]
    assert "${" not in text
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24
        if widget["type"] == "metric":
            assert widget["properties"]["region"] == "us-east-1"
    queues = [m[3] for w in body["widgets"] if w["type"] == "metric"
              for m in w["properties"]["metrics"] if m[0] == "AWS/SQS"]
    expected = {"<AsyncDeadLetterQueue.QueueName>"}
    if stack.params["Source"] == "s3":
        expected |= {"<IngestDeadLetterQueue.QueueName>", "<IngestQueue.QueueName>"}
    assert set(queues) == expected


# ---------------------------------------------------------------------------------- least privilege


def test_no_star_action_anywhere(stack):
    for path, key, value in walk(stack.resources()):
        if key in ("Action", "NotAction"):
            assert "*" not in as_list(value), path
        if key == "NotAction" or key == "NotResource":
            pytest.fail(f"{path}: NotAction/NotResource widen a policy")


def test_function_role_actions_have_no_wildcards(stack):
    for statement in role_statements(stack):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement


# Actions that have no resource-level permissions, so "*" is their only possible resource.
STAR_RESOURCE_ACTIONS = {"cloudwatch:PutMetricData", "cloudtrail:LookupEvents"}


def test_only_actions_without_resource_permissions_have_a_star_resource(stack):
    for statement in role_statements(stack):
        if "*" in as_list(statement["Resource"]):
            actions = as_list(statement["Action"])
            assert len(actions) == 1 and actions[0] in STAR_RESOURCE_ACTIONS, statement
            assert "Condition" in statement or actions == ["cloudtrail:LookupEvents"], statement
    (put,) = statements_with_action(stack, "cloudwatch:PutMetricData")
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "TokenWatch"}}


def test_emf_mode_gets_no_cloudwatch_permission(template):
    assert not statements_with_action(Stack(template, MetricsMode="emf"), "cloudwatch:PutMetricData")


def test_sns_publish_only_to_the_on_call_topic(stack):
    (publish,) = statements_with_action(stack, "sns:Publish")
    assert publish["Resource"] == "<AlertTopic>"


def test_dynamodb_only_on_the_state_table(stack):
    dynamodb = [s for s in role_statements(stack) if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    assert dynamodb and all(s["Resource"] == "<StateTable.Arn>" for s in dynamodb)


def test_s3_get_object_only_under_the_trail_prefix(template):
    assert not statements_with_action(Stack(template), "s3:GetObject")
    stack = Stack(template, Source="s3", TrailBucketName="org-trail-logs", TrailObjectPrefix="ct/AWSLogs/o-abc/")
    (get,) = statements_with_action(stack, "s3:GetObject")
    assert get["Action"] == "s3:GetObject"
    assert get["Resource"] == "arn:aws:s3:::org-trail-logs/ct/AWSLogs/o-abc/*"
    assert not any(a.startswith("s3:") and a != "s3:GetObject" for s in role_statements(stack) for a in as_list(s["Action"]))


def test_kms_decrypt_of_the_trail_key_only_when_set(template):
    key_arn = "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    without = Stack(template, Source="s3", TrailBucketName="trail")
    assert not [s for s in role_statements(without) if s.get("Sid") == "DecryptTrailLogFiles"]
    with_key = Stack(template, Source="s3", TrailBucketName="trail", TrailKmsKeyArn=key_arn)
    (decrypt,) = [s for s in role_statements(with_key) if s.get("Sid") == "DecryptTrailLogFiles"]
    assert decrypt["Action"] == "kms:Decrypt" and decrypt["Resource"] == key_arn
    # Not for the other sources, even with the parameter set.
    other = Stack(template, Source="eventbridge", TrailKmsKeyArn=key_arn)
    assert not [s for s in role_statements(other) if s.get("Sid") == "DecryptTrailLogFiles"]


def test_every_role_resource_is_specific(stack):
    allowed_placeholders = {
        "<FunctionLogGroup.Arn>", "<AlertTopic>", "<StateTable.Arn>", "<Key.Arn>",
        "<AsyncDeadLetterQueue.Arn>", "<IngestQueue.Arn>",
    }
    for statement in role_statements(stack):
        for resource in as_list(statement["Resource"]):
            assert (
                resource == "*" or resource in allowed_placeholders
                or resource.startswith(("arn:aws:s3:::", "arn:aws:kms:"))
            ), statement


def test_service_principals_are_scoped(stack):
    for name, resource in stack.resources_of_type("AWS::Lambda::Permission").items():
        assert resource["Properties"].get("SourceArn"), name
    for name, resource in stack.resources_of_type("AWS::SQS::QueuePolicy").items():
        for statement in statements(resource["Properties"]["PolicyDocument"]):
            if statement["Effect"] == "Allow":
                assert statement.get("Condition"), (name, statement)


# ---------------------------------------------------------------------------------- lint helpers


def test_checkov_variants_switch_the_defaults(template, tmp_path):
    write_variants(str(tmp_path))
    for name, defaults in VARIANTS.items():
        variant = yaml.load((tmp_path / f"template-{name}.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
        got = {k: variant["Parameters"][k]["Default"] for k in defaults}
        assert got == defaults
        assert variant["Resources"] == template["Resources"]


def test_every_checkov_skip_has_a_reason(template):
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV_"), name
            assert len(skip.get("comment", "")) > 40, f"{name}: skip {skip['id']} needs a written reason"
