"""The promises template.yaml keeps: each test names the behaviour its structure protects."""

from __future__ import annotations

import re
from typing import Any, Iterator
from urllib.parse import parse_qsl, urldefrag

import pytest
from samtranslator.policy_template_processor.processor import PolicyTemplatesProcessor

from local.template import LocalStackTemplate
from smsinvite.twilio_gateway import CONNECTION_OVERRIDES

IMPORT_PREFIXES = {"imports/", "panels/", "tokens/", "suppressions/"}
REPORTS_PREFIX = "reports/"
LAMBDA_DEFAULT_TIMEOUT = 3
SQS_DEFAULT_VISIBILITY_TIMEOUT = 30
POWERTOOLS_TRUTHY = {"1", "y", "yes", "t", "true", "on"}  # what Powertools reads as "on"
SAM_POLICY_TEMPLATES = PolicyTemplatesProcessor.get_default_policy_templates_json()["Templates"]


# ---------------------------------------------------------------- helpers


def resources_of_type(template: dict, type_: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == type_
    }


def target_of(value: Any) -> str | None:
    """The logical id that a {"Ref": X} or {"Fn::GetAtt": [X, attribute]} points at."""
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0]
    return None


def events_of_type(functions: dict, type_: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(function id, event id, event properties) for every event of that type."""
    for function_id, properties in functions.items():
        for event_id, event in (properties.get("Events") or {}).items():
            if event["Type"] == type_:
                yield function_id, event_id, event.get("Properties", {})


def dead_letter_queues(template: dict, functions: dict) -> set[str]:
    """Queues that catch failures: redrive targets, async-invoke OnFailure destinations, function DLQs."""
    queues = resources_of_type(template, "AWS::SQS::Queue")
    dlqs = {
        target_of(queue["RedrivePolicy"]["deadLetterTargetArn"])
        for queue in queues.values()
        if "RedrivePolicy" in queue
    }
    for properties in functions.values():
        on_failure = (
            (properties.get("EventInvokeConfig") or {}).get("DestinationConfig", {}).get("OnFailure", {})
        )
        dlqs.add(target_of(on_failure.get("Destination")))
        dlqs.add(target_of((properties.get("DeadLetterQueue") or {}).get("TargetArn")))
    return {dlq for dlq in dlqs if dlq in queues}


def alarms_on(
    template: dict, namespace: str, metric: str, dimension: str, attribute: str | None = None
) -> dict[str, str]:
    """Logical id watched -> alarm id, for alarms that notify someone.

    The dimension's value must be the watched resource's name: !Ref it, or !GetAtt it.<attribute>.
    """
    watched = {}
    for alarm_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        if alarm.get("Namespace") != namespace or alarm.get("MetricName") != metric or not alarm.get("AlarmActions"):
            continue
        for dim in alarm.get("Dimensions", []):
            value = dim["Value"]
            if dim["Name"] != dimension or not isinstance(value, dict):
                continue
            if attribute is None and "Ref" in value:
                watched[value["Ref"]] = alarm_id
            elif attribute is not None and value.get("Fn::GetAtt", [None, None])[1] == attribute:
                watched[value["Fn::GetAtt"][0]] = alarm_id
    return watched


def string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


# ---------------------------------------------------------------- queues


def test_every_consumed_queue_has_a_dead_letter_queue_with_max_receive_count_of_at_least_five(template, functions):
    # Given the queues that functions consume
    queues = resources_of_type(template, "AWS::SQS::Queue")
    consumed = {target_of(props["Queue"]) for _, _, props in events_of_type(functions, "SQS")}
    assert consumed, "no function consumes a queue: the promise below would hold vacuously"

    for queue_id in sorted(consumed):
        # When a message in one keeps failing
        assert queue_id in queues, f"an SQS event reads {queue_id}, which is not an AWS::SQS::Queue here"
        redrive = queues[queue_id].get("RedrivePolicy")
        # Then it is retried at least five times and then parked in a DLQ, never lost
        assert redrive, f"{queue_id} has no RedrivePolicy"
        assert target_of(redrive["deadLetterTargetArn"]) in queues, f"{queue_id} redrives to no queue of this stack"
        assert int(redrive["maxReceiveCount"]) >= 5, f"{queue_id} gives up after {redrive['maxReceiveCount']}"


def test_the_import_queue_delivers_a_step_once_more_than_the_importer_attempts_it(template, functions):
    # Given the import queue, which carries each step of an import to the import function
    from smsinvite.importing import IMPORT_ATTEMPTS

    import_events = [props for function_id, _, props in events_of_type(functions, "SQS") if function_id == "ImportFunction"]
    assert [target_of(props["Queue"]) for props in import_events] == ["ImportQueue"]
    receives = int(resources_of_type(template, "AWS::SQS::Queue")["ImportQueue"]["RedrivePolicy"]["maxReceiveCount"])

    # Then the delivery after the importer's last attempt still reaches it, and ends the import
    # (failed, with a reason, the campaign's lease released), rather than the dead-letter queue
    assert receives == IMPORT_ATTEMPTS + 1, f"ImportQueue maxReceiveCount {receives}, IMPORT_ATTEMPTS {IMPORT_ATTEMPTS}"


def test_every_queue_is_either_a_dead_letter_queue_or_redrives_to_one(template, functions):
    # Given every queue in the template
    queues = resources_of_type(template, "AWS::SQS::Queue")
    dlqs = dead_letter_queues(template, functions)

    # Then none can drop a poison message: each one is a DLQ, or redrives to one
    without_dlq = sorted(q for q, props in queues.items() if q not in dlqs and "RedrivePolicy" not in props)
    assert without_dlq == []


def test_every_consumed_queue_hides_a_message_for_at_least_six_times_its_consumers_timeout(template, functions):
    # Given each SQS event, its queue and the consuming function's timeout (its own, or Globals')
    queues = resources_of_type(template, "AWS::SQS::Queue")
    for function_id, event_id, props in events_of_type(functions, "SQS"):
        queue_id = target_of(props["Queue"])
        timeout = int(functions[function_id].get("Timeout", LAMBDA_DEFAULT_TIMEOUT))
        visibility = int(queues[queue_id].get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY_TIMEOUT))

        # Then a message in flight stays hidden long enough for the consumer to finish (and retry),
        # so no other invocation receives it meanwhile
        assert visibility >= 6 * timeout, (
            f"{queue_id} VisibilityTimeout {visibility} < 6 x {function_id} Timeout {timeout} ({event_id})"
        )


def test_every_sqs_event_reports_batch_item_failures_and_caps_its_concurrency(functions):
    # Given every SQS event source
    events = list(events_of_type(functions, "SQS"))
    assert events

    for function_id, event_id, props in events:
        where = f"{function_id}.Events.{event_id}"
        # Then one bad record fails only itself, not the whole batch
        assert "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []), where
        # And the consumer cannot scale past a set number of concurrent invocations (SQS allows 2 to 1000)
        maximum = props.get("ScalingConfig", {}).get("MaximumConcurrency")
        assert isinstance(maximum, int) and 2 <= maximum <= 1000, f"{where} MaximumConcurrency={maximum!r}"


def test_every_dead_letter_queue_has_an_alarm_on_visible_messages(template, functions):
    # Given every queue that failures land in
    dlqs = dead_letter_queues(template, functions)
    assert dlqs

    # When a message reaches one
    watched = alarms_on(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "QueueName")

    # Then an alarm with an action watches that queue
    assert sorted(dlqs - watched.keys()) == []


# ---------------------------------------------------------------- functions


def test_every_function_has_an_errors_alarm(template, functions):
    # Given every function
    # When one raises
    watched = alarms_on(template, "AWS/Lambda", "Errors", "FunctionName")

    # Then an alarm with an action watches its Errors metric
    assert sorted(functions.keys() - watched.keys()) == []


def test_every_function_logs_to_a_log_group_with_retention(template, functions):
    # Given the log groups this template declares
    log_groups = resources_of_type(template, "AWS::Logs::LogGroup")

    for function_id, properties in functions.items():
        # When a function logs
        log_group = target_of((properties.get("LoggingConfig") or {}).get("LogGroup"))

        # Then its lines go to a declared group (not an implicit one kept forever) that expires them
        assert log_group in log_groups, f"{function_id} LoggingConfig.LogGroup is not a !Ref to a log group here"
        assert log_groups[log_group].get("RetentionInDays"), f"{log_group} ({function_id}) keeps logs forever"


def test_every_function_policy_is_a_sam_policy_template_scoped_to_one_resource(functions):
    for function_id, properties in functions.items():
        # Given a function's permissions
        # Then they come only from its Policies, not from a role of its own
        assert "Role" not in properties, f"{function_id} brings its own Role"
        policies = properties.get("Policies", [])
        assert isinstance(policies, list), f"{function_id} Policies is a single managed policy: {policies!r}"

        for policy in policies:
            # And each is a SAM policy template, never a managed policy (AdministratorAccess, an ARN)
            # or an inline statement
            assert isinstance(policy, dict) and len(policy) == 1, f"{function_id}: {policy!r} is no policy template"
            (name, parameters), = policy.items()
            assert name in SAM_POLICY_TEMPLATES, f"{function_id}: {name} is not a SAM policy template"
            # And it names the one table, queue, bucket or secret it applies to
            assert SAM_POLICY_TEMPLATES[name].get("Parameters"), f"{function_id}: {name} is not scoped to a resource"
            for leaf in string_leaves(parameters):
                # ("-*" only as the random suffix Secrets Manager appends to one secret's name)
                assert "*" not in leaf.removesuffix("-*"), f"{function_id}: {name} has a wildcard: {leaf!r}"


def test_functions_run_on_python_3_12_or_newer(functions):
    for function_id, properties in functions.items():
        # Given a function's runtime (its own, or Globals')
        match = re.fullmatch(r"python3\.(\d+)", properties.get("Runtime", ""))

        # Then it is a Python still in support, 3.12 or newer
        assert match and int(match.group(1)) >= 12, f"{function_id} Runtime={properties.get('Runtime')!r}"


def test_globals_trace_every_function_and_never_log_whole_events_or_responses(template, functions):
    # Given the Globals every function inherits
    globals_function = template["Globals"]["Function"]

    # Then X-Ray tracing is on
    assert globals_function.get("Tracing") == "Active"
    for function_id, properties in functions.items():
        assert properties.get("Tracing") == "Active", f"{function_id} turns tracing off"

        # And no function logs whole events or captures responses in traces: both are full of phone numbers
        variables = {
            **globals_function.get("Environment", {}).get("Variables", {}),
            **(properties.get("Environment") or {}).get("Variables", {}),
        }
        for variable in ("POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_TRACER_CAPTURE_RESPONSE"):
            value = str(variables.get(variable, "false")).lower()
            assert value not in POWERTOOLS_TRUTHY, f"{function_id} sets {variable}={value}"


def test_dependency_layer_leaves_boto3_to_the_runtime_and_pins_every_package(template, repo_root):
    # Given the layer that SAM builds with pip (it has a python BuildMethod) and its requirements file
    layers = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::LayerVersion"
        and str(resource.get("Metadata", {}).get("BuildMethod", "")).startswith("python")
    }
    assert len(layers) == 1, f"expected one pip-built dependency layer, found {sorted(layers)}"
    (layer,) = layers.values()
    requirements = repo_root / layer["Properties"]["ContentUri"] / "requirements.txt"
    lines = [line.split("#", 1)[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    assert lines

    for line in lines:
        # Then every package is pinned to one version, so builds repeat
        assert "==" in line, f"{requirements.name}: {line!r} is not pinned with =="
        # And boto3/botocore come from the Lambda runtime, not the layer
        name = re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0].lower().replace("_", "-")
        assert name not in {"boto3", "botocore"}, f"{requirements.name} ships {name}"


# ---------------------------------------------------------------- storage


def test_bucket_is_encrypted_and_blocks_all_public_access(template):
    buckets = resources_of_type(template, "AWS::S3::Bucket")
    assert buckets

    for bucket_id, bucket in buckets.items():
        # Given a bucket of uploaded phone lists and reports
        rules = bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        # Then objects are encrypted at rest
        assert rules and all(
            rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}
            for rule in rules
        ), bucket_id
        # And no ACL or bucket policy can make them public
        block = bucket.get("PublicAccessBlockConfiguration", {})
        assert all(
            block.get(setting) is True
            for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        ), f"{bucket_id} PublicAccessBlockConfiguration={block}"


def test_bucket_notifications_fire_only_on_import_prefixes_and_never_on_reports(template, functions):
    # Given every notification on the bucket: S3 events on functions, and any the bucket declares itself
    filters = {
        f"{function_id}.Events.{event_id}": props.get("Filter")
        for function_id, event_id, props in events_of_type(functions, "S3")
    }
    for bucket_id, bucket in resources_of_type(template, "AWS::S3::Bucket").items():
        notifications = bucket.get("NotificationConfiguration", {})
        for kind in ("LambdaConfigurations", "QueueConfigurations", "TopicConfigurations"):
            for index, configuration in enumerate(notifications.get(kind, [])):
                filters[f"{bucket_id}.{kind}[{index}]"] = configuration.get("Filter")
    assert filters

    prefixes = {}
    for where, filter_ in filters.items():
        rules = (filter_ or {}).get("S3Key", {}).get("Rules", [])
        prefix = next((rule["Value"] for rule in rules if rule["Name"].lower() == "prefix"), "")
        # Then each fires on one import prefix only, so a report written under reports/ imports nothing
        assert prefix in IMPORT_PREFIXES, f"{where} fires on prefix {prefix!r}"
        assert not REPORTS_PREFIX.startswith(prefix), where
        prefixes[prefix] = where

    # And every kind of import has a notification
    assert prefixes.keys() == IMPORT_PREFIXES


def test_tables_bill_per_request_and_are_encrypted_at_rest(template):
    tables = resources_of_type(template, "AWS::DynamoDB::Table")
    assert tables

    for table_id, table in tables.items():
        # Then no table needs capacity planning, and every one is encrypted
        assert table.get("BillingMode") == "PAY_PER_REQUEST", table_id
        assert table.get("SSESpecification", {}).get("SSEEnabled") is True, table_id


def test_tables_whose_items_expire_declare_their_time_to_live_attribute(template):
    # Given the tables whose items expire, and the attribute the code writes the expiry to
    # (Powertools idempotency writes "expiration" by default)
    expiring = {"CodesTable": "purge_at", "InboxTable": "purge_at", "IdempotencyTable": "expiration"}
    tables = resources_of_type(template, "AWS::DynamoDB::Table")

    for table_id, attribute in expiring.items():
        # Then DynamoDB deletes those items once that time has passed
        ttl = tables[table_id].get("TimeToLiveSpecification", {})
        assert ttl == {"AttributeName": attribute, "Enabled": True}, f"{table_id} TTL={ttl}"


# ---------------------------------------------------------------- API and outputs


def test_http_api_serves_the_twilio_webhooks_and_the_short_link(template, functions):
    # Given every HttpApi event, as "METHOD /path"
    http_apis = resources_of_type(template, "AWS::Serverless::HttpApi")
    routes: dict[str, list[str]] = {}
    for function_id, _, props in events_of_type(functions, "HttpApi"):
        assert target_of(props.get("ApiId")) in http_apis, f"{function_id} routes to an API this stack lacks"
        routes.setdefault(f"{props['Method'].upper()} {props['Path']}", []).append(function_id)

    # Then Twilio and the invitee find each route they call, served by exactly one function
    # (the survey's redeem and complete routes arrive with their API-key authentication)
    for route in ("POST /twilio/status", "POST /twilio/inbound", "GET /i/{code}"):
        assert len(routes.get(route, [])) == 1, f"{route} is served by {routes.get(route, [])}"


def test_outputs_include_what_the_cli_reads(template):
    # Given the stack's outputs
    # Then the CLI finds the API URL, the bucket and the commands function
    assert {"WebhookApiUrl", "ImportsBucketName", "CommandsFunctionName"} <= template.get("Outputs", {}).keys()


# The status callbacks of one message: queued (sent through a Messaging Service), sending, sent and
# delivered. Twilio retries none that met a 429, so the API's throttle must admit them all.
CALLBACKS_PER_MESSAGE = 4
# Callbacks come in bursts (a carrier's delivery reports, retries after a 5xx), and inbound replies
# and short-link clicks share the API.
THROTTLE_HEADROOM = 2


def test_the_api_throttle_admits_every_callback_at_the_highest_sender_ceiling(template):
    # Given the highest sender ceiling the template allows
    ceiling = template["Parameters"]["SenderCeilingPerSecond"]
    assert "MaxValue" in ceiling, "SenderCeilingPerSecond has no MaxValue: any ceiling is allowed"
    callbacks_per_second = ceiling["MaxValue"] * CALLBACKS_PER_MESSAGE

    # When the API's stage throttles its routes
    [api] = resources_of_type(template, "AWS::Serverless::HttpApi").values()
    throttle = api["DefaultRouteSettings"]

    # Then a sender at that ceiling has its callbacks admitted, with headroom, and bursts of them too
    assert throttle["ThrottlingRateLimit"] >= callbacks_per_second * THROTTLE_HEADROOM, (throttle, callbacks_per_second)
    assert throttle["ThrottlingBurstLimit"] >= throttle["ThrottlingRateLimit"], throttle


def webhook_output(template: dict, name: str, **parameters: str) -> str:
    """An output's URL as CloudFormation resolves it, for a stack deployed with these parameters."""
    resolved = LocalStackTemplate({"TwilioAccountSid": "AC" + "0" * 32, **parameters}, template=template)
    return resolved.output(name)


@pytest.mark.parametrize("name, route", [("InboundWebhookUrl", "/twilio/inbound"),
                                         ("StatusCallbackUrl", "/twilio/status")])
@pytest.mark.parametrize("public_base_url", ["", "https://sms.example.org/prod"])
def test_the_webhook_urls_an_operator_registers_make_twilio_retry_a_5xx(template, name, route, public_base_url):
    # Given the stack deployed on its execute-api URL, or behind a custom domain with a base path
    url = webhook_output(template, name, PublicWebhookBaseUrl=public_base_url)
    base, fragment = urldefrag(url)

    # Then the URL is the one the signature check verifies: the public base URL and the route
    # (the execute-api URL when none is configured)
    expected_base = public_base_url or webhook_output(template, "WebhookApiUrl")
    assert base == expected_base + route
    # And its connection overrides have Twilio retry a 5xx and a failed connection, at least once
    overrides = dict(parse_qsl(fragment))
    assert int(overrides.get("rc", "1")) >= 1, url
    assert {"5xx", "ct"} <= set(overrides.get("rp", "ct").split(",")), url
    # And they are the overrides the sender puts on each message's status callback
    assert fragment == CONNECTION_OVERRIDES


def _grants(functions: dict, function_id: str) -> set[tuple[str, str]]:
    """(policy template, the resource it names) for each of a function's policies."""
    granted = set()
    for policy in functions[function_id].get("Policies", []):
        (name, parameters), = policy.items()
        for value in parameters.values():
            granted.add((name, target_of(value) or str(value)))
    return granted


# The local stack does not enforce IAM, so a path that needs a permission is checked here: without it the
# path fails only in AWS.
@pytest.mark.parametrize("function_id, why", [
    ("SenderFunction", "a definite refusal at send time (21610, a dead number)"),
    ("StatusWebhookFunction", "a carrier error in a status callback"),
    ("SchedulerFunction", "a carrier error found by the reconciler or the fetch of a lost final status"),
])
def test_every_function_that_records_a_carrier_error_may_write_the_suppressions_and_the_ledger(functions, function_id, why):
    granted = _grants(functions, function_id)
    for table in ("SuppressionsTable", "ConsentTable"):
        assert ("DynamoDBCrudPolicy", table) in granted, f"{function_id} records {why} but may not write {table}"


@pytest.mark.parametrize("function_id", ["SenderFunction", "DispatcherFunction", "SchedulerFunction"])
def test_every_function_that_may_start_a_runs_settle_checks_may_send_to_the_dispatch_queue(functions, function_id):
    # (complete_if_done queues them when a run's last messages are on their way)
    granted = {target for name, target in _grants(functions, function_id) if name == "SQSSendMessagePolicy"}
    assert "DispatchQueue" in granted, f"{function_id} may start a run's settle checks but not send them"
