"""The embedded default: all of smsinvite on one machine, no AWS account and no Twilio account.

- moto (S3, SQS, Secrets Manager) and DynamoDB Local on 127.0.0.1;
- the Twilio simulator on 127.0.0.1, which the real twilio SDK talks to;
- every resource created from template.yaml;
- the router, which delivers template.yaml's events to the handlers with AWS's event shapes;
- Lambda's Invoke API on 127.0.0.1, so that the CLI (or any boto3 lambda client) can call the functions.

`python -m local.stack` (or `make up`) keeps it running, prints the endpoints and writes them to the
state file the CLI reads (`smsinvite.cli.local_state_path()`), which it removes when it stops.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from local.lambda_api import LambdaInvokeApi
from local.resources import LocalResources, create_resources
from local.router import Router
from local.services import LocalServices, start_services
from local.template import LOCAL_REGION, LocalStackTemplate
from local.twilio_sim import TwilioSimulator
from smsinvite.cli import local_state_path

LOCAL_FROM_NUMBER = "+15005550006"  # Twilio's magic "valid From" test number


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class StackOptions:
    sender_mps: int = 10
    # The scheduler's rate(1 minute), shortened so reconciliation is visible in a demo.
    schedule_interval_seconds: float | None = None
    reconcile_grace_seconds: int = 2
    # AWS's defaults are 900 and 7200 s; locally the evidence is gathered in seconds.
    reconcile_confirm_seconds: int = 5
    final_status_after_seconds: int = 120
    sqs_retry_delay_seconds: float = 0.5
    use_dynamodb_local: bool = True


class LocalStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.services: LocalServices | None = None
        self.twilio: TwilioSimulator | None = None
        self.router: Router | None = None
        self.lambda_api: LambdaInvokeApi | None = None
        self.resources: LocalResources | None = None
        self.template: LocalStackTemplate | None = None
        self._saved_environ: dict[str, str | None] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        options = self.options
        self.services = start_services(use_dynamodb_local=options.use_dynamodb_local)
        self.twilio = TwilioSimulator(mps_limit=options.sender_mps).start()
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.template = LocalStackTemplate(
            {
                "TwilioAccountSid": self.twilio.account_sid,
                "TwilioFromNumber": LOCAL_FROM_NUMBER,
                "PublicWebhookBaseUrl": self.api_url,
                "SenderCeilingPerSecond": str(options.sender_mps),
            },
            sqs_endpoint=self.services.aws_endpoint,
        )
        # Configuration only: the same code reaches moto, DynamoDB Local and the simulator
        # through the endpoints botocore and the Twilio gateway read from the environment.
        self._set_environ(
            {
                "AWS_ENDPOINT_URL": self.services.aws_endpoint,
                "AWS_ENDPOINT_URL_DYNAMODB": self.services.dynamodb_endpoint,
                "AWS_DEFAULT_REGION": LOCAL_REGION,
                "AWS_REGION": LOCAL_REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "TWILIO_API_BASE_URL": self.twilio.base_url,
                "RECONCILE_GRACE_SECONDS": str(options.reconcile_grace_seconds),
                "RECONCILE_CONFIRM_SECONDS": str(options.reconcile_confirm_seconds),
                "FINAL_STATUS_AFTER_SECONDS": str(options.final_status_after_seconds),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_DEV": "false",
            }
        )
        self.resources = create_resources(
            self.template,
            aws_endpoint=self.services.aws_endpoint,
            dynamodb_endpoint=self.services.dynamodb_endpoint,
            twilio_auth_token=self.twilio.auth_token,
        )
        self.router = Router(
            self.template,
            aws_endpoint=self.services.aws_endpoint,
            http_port=api_port,
            sqs_retry_delay=options.sqs_retry_delay_seconds,
            schedule_interval_override=options.schedule_interval_seconds,
        )
        self.router.start()
        self.lambda_api = LambdaInvokeApi(self.router).start()
        self.lambda_endpoint = self.lambda_api.endpoint

    def stop(self) -> None:
        for part in (self.lambda_api, self.router, self.twilio, self.services):
            if part is not None:
                try:
                    part.stop()
                except Exception as error:  # noqa: BLE001 - keep stopping the rest
                    print(f"local stack: stopping {type(part).__name__} failed: {error}", file=sys.stderr)
        self.lambda_api = self.router = self.twilio = self.services = None
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ = {}

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _set_environ(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_environ.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    # ------------------------------------------------------------------ conveniences
    @property
    def bucket(self) -> str:
        return self.template.physical_name("ImportsBucket")

    def queue_url(self, logical_id: str) -> str:
        return self.resources.queues[logical_id]

    @property
    def inbound_webhook_url(self) -> str:
        """What an operator sets as the inbound webhook in Twilio: the InboundWebhookUrl output,
        with its connection overrides (PublicWebhookBaseUrl is this stack's API)."""
        return self.template.output("InboundWebhookUrl")

    def command(self, payload: dict) -> dict:
        """What the console's "Test" button or the CLI does: invoke the commands function."""
        return self.router.invoke("CommandsFunction", payload)

    def endpoints(self) -> dict[str, str]:
        return {
            "webhook API": self.api_url,
            "status callback": self.template.output("StatusCallbackUrl"),
            "inbound webhook": self.inbound_webhook_url,
            "Lambda Invoke API (the CLI's commands)": self.lambda_endpoint,
            "AWS (moto: S3, SQS, Secrets Manager)": self.services.aws_endpoint,
            f"DynamoDB ({self.services.engine})": self.services.dynamodb_endpoint,
            "Twilio simulator": self.twilio.base_url,
            "imports bucket": self.bucket,
        }

    def client_state(self) -> dict[str, str]:
        """What a client (the CLI) needs to send commands and uploads to this stack."""
        return {
            "lambda_endpoint": self.lambda_endpoint,
            "aws_endpoint": self.services.aws_endpoint,
            "bucket": self.bucket,
            "commands_function": "CommandsFunction",
            "region": LOCAL_REGION,
        }

    def write_state_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.client_state(), indent=2) + "\n", encoding="utf-8")


def main() -> int:
    stack = LocalStack(StackOptions(schedule_interval_seconds=10)).start()
    state_file = local_state_path()
    print("smsinvite local stack is up. Endpoints:")
    for name, url in stack.endpoints().items():
        print(f"  {name:<40} {url}")
    print(
        "\nDrop a CSV with:\n"
        f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url {stack.services.aws_endpoint} \\\n"
        f"    s3 cp recipients.csv s3://{stack.bucket}/imports/<campaign_id>/recipients.csv\n"
        f"or use the CLI, which finds this stack through {state_file}:\n"
        "  .venv/bin/smsinvite upload recipients.csv --campaign <campaign_id>\n"
        "  .venv/bin/smsinvite status <campaign_id> --watch\n"
        "Press Ctrl-C to stop."
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stack.write_state_file(state_file)
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        state_file.unlink(missing_ok=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
