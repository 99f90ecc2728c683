"""The installed `smsinvite` CLI against the running local stack, through its Lambda Invoke API and moto's S3.

The CLI runs in its own process, as an operator runs it, and finds the stack the way it does after
`make up`: through the state file the stack writes. (In this process the functions' logs and metrics
would share the CLI's stdout.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from local.demo import create_campaign
from smsinvite import cli

SMSINVITE = Path(sys.executable).with_name("smsinvite")  # the console script `pip install -e .` puts in the venv


@pytest.fixture
def state_file(stack, tmp_path):
    path = tmp_path / "local-stack.json"
    stack.write_state_file(path)
    return path


@pytest.fixture
def smsinvite(state_file):
    def run(*argv: str) -> subprocess.CompletedProcess:
        environment = {**os.environ, cli.LOCAL_STATE_VARIABLE: str(state_file)}
        return subprocess.run(
            [str(SMSINVITE), *argv], env=environment, capture_output=True, text=True, timeout=60, check=False
        )

    return run


def test_the_state_file_tells_a_client_where_the_local_stack_is(stack, state_file):
    assert json.loads(state_file.read_text()) == {
        "lambda_endpoint": stack.lambda_endpoint,
        "aws_endpoint": stack.services.aws_endpoint,
        "bucket": stack.bucket,
        "commands_function": "CommandsFunction",
        "region": "us-east-1",
    }


def test_cli_creates_a_campaign_and_reads_its_status_through_the_local_lambda_api(
    smsinvite, stack, campaign_id, tmp_path
):
    # Given a campaign's fields in a file, with a placeholder id
    campaign_file = tmp_path / "campaign.json"
    campaign_file.write_text(json.dumps({
        "campaign_id": "replaced-by-set",
        "name": "Spring NPS",
        "survey_url": "https://survey.example.com/s/spring",
        "message_template": "Hi {first_name|there}, tell us how we did: {link} Reply STOP to opt out",
    }))
    direct_calls = len(stack.router.invocations_of("CommandsFunction", "Direct"))

    # When the operator creates it under a new id, then asks for its status
    created = smsinvite("create-campaign", "--json", str(campaign_file), "--set", f"campaign_id={campaign_id}")
    status = smsinvite("status", campaign_id, "--json-output")

    # Then both commands reached the commands function, and the campaign is a draft
    assert (created.returncode, created.stderr) == (0, "")
    assert json.loads(created.stdout)["state"] == "draft"
    assert (status.returncode, status.stderr) == (0, "")
    assert json.loads(status.stdout)["campaign_id"] == campaign_id
    assert json.loads(status.stdout)["name"] == "Spring NPS"
    assert len(stack.router.invocations_of("CommandsFunction", "Direct")) == direct_calls + 2


def test_a_refused_command_prints_the_functions_reasons_and_exits_1(smsinvite, campaign_id):
    # When a campaign is created without its required fields
    refused = smsinvite("create-campaign", "--set", f"campaign_id={campaign_id}")

    # Then the function's refusal, with every problem, on one line
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: create_campaign is not valid; ")
    assert "name: Field required" in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_status_watch_ends_at_once_on_a_draft(smsinvite, stack, campaign_id):
    create_campaign(stack, campaign_id)

    watched = smsinvite("status", campaign_id, "--watch", "--interval", "0.1")

    assert (watched.returncode, watched.stdout) == (0, f"{campaign_id} draft  no recipients\n")


def test_an_unknown_function_is_one_line_and_exit_2(smsinvite, stack, state_file):
    state_file.write_text(json.dumps({**stack.client_state(), "commands_function": "NoSuchFunction"}))

    failed = smsinvite("status", "spring-nps")

    assert failed.returncode == 2
    assert failed.stderr == "error: ResourceNotFoundException: Function not found: NoSuchFunction\n"


def test_upload_puts_the_file_under_the_campaign_prefix(smsinvite, stack, campaign_id, tmp_path):
    # Given a campaign and a CSV of its recipients
    create_campaign(stack, campaign_id)
    csv = tmp_path / "customers spring.csv"
    csv.write_text("First Name,Mobile\nAna,+1 415 555 2671\n")

    # When the operator uploads it for the campaign
    uploaded = smsinvite("upload", str(csv), "--campaign", campaign_id)

    # Then it is in the bucket under imports/<campaign>/, and the key is printed
    key = f"imports/{campaign_id}/customers spring.csv"
    assert (uploaded.returncode, uploaded.stdout) == (0, f"{key}\n")
    assert boto3.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read() == csv.read_bytes()
    stack.router.drain()  # the upload starts an import: let it finish before the next test
