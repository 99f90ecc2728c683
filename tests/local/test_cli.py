"""The smsinvite CLI: what it sends, what it prints, and how it fails.

The commands function and the bucket are faked behind the CLI's Target; only the unreachable-stack
test opens a socket (to 127.0.0.1), and the --stack tests use moto in-process.
"""

from __future__ import annotations

import io
import json

import boto3
import pytest
from moto import mock_aws

from local.stack import free_port
from smsinvite import cli


class FakeStack:
    """The commands function and the imports bucket as the CLI's boto3 clients see them."""

    def __init__(self) -> None:
        self.replies: list[object] = []  # the function's reply to each command, in turn
        self.function_error = False
        self.commands: list[dict] = []
        self.uploads: list[tuple[str, str, str]] = []

    def invoke(self, FunctionName: str, Payload: bytes) -> dict:  # noqa: N803 - boto3's names
        self.commands.append(json.loads(Payload))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        response = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(reply).encode())}
        return {**response, "FunctionError": "Unhandled"} if self.function_error else response

    def upload_file(self, filename: str, bucket: str, key: str) -> None:
        self.uploads.append((filename, bucket, key))


@pytest.fixture
def fake_stack(monkeypatch):
    fake = FakeStack()
    monkeypatch.setattr(cli, "local_target", lambda: cli.Target("CommandsFunction", "imports-bucket", fake, fake))
    return fake


def ok(result: dict) -> dict:
    return {"ok": True, "result": result}


def status(state: str, done: int | None = None, total: int = 10) -> dict:
    result = {"campaign_id": "spring", "state": state, "counts": {"pending": 4, "sent": 6}}
    if done is not None:
        result["progress"] = {"total": total, "done": done}
    return ok(result)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ------------------------------------------------------------------------------------ commands
def test_a_verb_sends_the_command_of_its_name_with_the_campaign_id(fake_stack, capsys):
    # Given a stack that accepts the command
    fake_stack.replies = [ok({"import_id": "i-1", "state": "completed"})]

    # When the operator adds a panel
    code = cli.main(["add-panel", "spring", "--set", "panel_id=vip"])

    # Then the command of the same name was sent, and its result printed as indented JSON
    assert code == 0
    assert fake_stack.commands == [{"command": "add_panel", "campaign_id": "spring", "panel_id": "vip"}]
    assert json.loads(capsys.readouterr().out) == {"import_id": "i-1", "state": "completed"}


def test_set_builds_nested_fields():
    fields: dict = {"audience": {"sources": ["csv"]}}

    for setting in ('audience.panels=["vip"]', "audience.rules.min_age=18", "name=Spring NPS"):
        cli.apply_setting(fields, setting)

    assert fields == {
        "audience": {"sources": ["csv"], "panels": ["vip"], "rules": {"min_age": 18}},
        "name": "Spring NPS",
    }


def test_set_values_are_json_when_they_parse_and_strings_otherwise():
    fields: dict = {}

    for setting in ("allow_landlines=true", "rate=2.5", "campaign_id=007", "sender=", "note=a=b"):
        cli.apply_setting(fields, setting)

    assert fields == {"allow_landlines": True, "rate": 2.5, "campaign_id": "007", "sender": "", "note": "a=b"}


def test_set_overrides_the_json_file_and_the_verb_names_the_command(event, tmp_path):
    # Given a console event saved to a file, with its own "command" and campaign_id
    sample = event("command-create-campaign.json")
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps(sample))

    # When it is sent with create-campaign and --set
    command = cli.build_command("create-campaign", str(path), ["campaign_id=spring"], None)

    # Then --set wins over the file, the command is the verb's, and the other fields are the file's
    assert command == {**sample, "command": "create_campaign", "campaign_id": "spring"}


def test_fields_can_come_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"panel_id": "vip"}'))

    assert cli.build_command("add-panel", "-", [], "spring") == {
        "command": "add_panel", "panel_id": "vip", "campaign_id": "spring",
    }


def test_json_output_prints_raw_json_before_or_after_the_verb(fake_stack, capsys):
    fake_stack.replies = [status("draft"), status("draft")]

    assert cli.main(["status", "spring", "--json-output"]) == 0
    assert cli.main(["--json-output", "status", "spring"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines == [json.dumps(status("draft")["result"])] * 2


# ------------------------------------------------------------------------------------ uploads
@pytest.mark.parametrize(
    ("flags", "prefix"),
    [
        (["--campaign", "spring"], "imports/spring/"),
        (["--panel", "vip"], "panels/vip/"),
        (["--tokens", "spring"], "tokens/spring/"),
        (["--suppressions"], "suppressions/"),
    ],
)
def test_upload_puts_the_file_under_the_prefix_its_flag_names(fake_stack, tmp_path, capsys, flags, prefix):
    csv = tmp_path / "customers march.csv"
    csv.write_text("phone\n+14155552671\n")

    assert cli.main(["upload", str(csv), *flags]) == 0

    assert fake_stack.uploads == [(str(csv), "imports-bucket", f"{prefix}customers march.csv")]
    assert capsys.readouterr().out == f"{prefix}customers march.csv\n"


def test_upload_with_json_output_prints_the_bucket_and_key(fake_stack, tmp_path, capsys):
    csv = tmp_path / "vip.csv"
    csv.write_text("phone\n+14155552671\n")

    assert cli.main(["upload", str(csv), "--panel", "vip", "--json-output"]) == 0

    assert json.loads(capsys.readouterr().out) == {"bucket": "imports-bucket", "key": "panels/vip/vip.csv"}


# ------------------------------------------------------------------------------------ failures
def test_a_refused_command_prints_one_line_and_exits_1(fake_stack, capsys):
    # Given a stack that refuses the command, with details
    fake_stack.replies = [
        {
            "ok": False,
            "error": {
                "code": "invalid_input",
                "message": "create_campaign is not valid",
                "details": ["name: Field required", "survey_url: Field required"],
            },
        }
    ]

    # When the command is sent
    code = cli.main(["create-campaign", "--set", "campaign_id=spring"])

    # Then one readable line on stderr, and exit 1
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == "error: create_campaign is not valid; name: Field required; survey_url: Field required\n"


def test_a_function_error_prints_one_line_and_exits_2(fake_stack, capsys):
    fake_stack.replies = [{"errorMessage": "boom", "errorType": "RuntimeError"}]
    fake_stack.function_error = True

    assert cli.main(["status", "spring"]) == 2
    assert capsys.readouterr().err == "error: CommandsFunction failed: RuntimeError: boom\n"


def test_no_local_stack_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(cli.LOCAL_STATE_VARIABLE, str(tmp_path / "local-stack.json"))

    assert cli.main(["status", "spring"]) == 2
    assert capsys.readouterr().err == (
        "error: no local stack running: start it with `make up`, or pass --stack NAME\n"
    )


def test_the_state_file_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.LOCAL_STATE_VARIABLE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert cli.local_state_path() == tmp_path / ".cache" / "smsinvite" / "local-stack.json"


def test_a_stopped_local_stack_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # Given a state file left behind by a local stack that no longer listens
    state = tmp_path / "local-stack.json"
    closed = f"http://127.0.0.1:{free_port()}"
    state.write_text(json.dumps({
        "lambda_endpoint": closed, "aws_endpoint": closed, "bucket": "b",
        "commands_function": "CommandsFunction", "region": "us-east-1",
    }))
    monkeypatch.setenv(cli.LOCAL_STATE_VARIABLE, str(state))

    # When a command is sent, then one line that says what to check
    assert cli.main(["status", "spring"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: Could not connect to the endpoint URL: "{closed}/')
    assert err.endswith("is `make up` still running?\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "spring", "--set", "no-equals-sign"], "error: --set 'no-equals-sign': expected key=value"),
        (["status", "spring", "--set", "name=x", "--set", "name.first=y"], "error: --set 'name.first=y': name is"),
        (["create-campaign", "--json", "missing.json"], "error: No such file or directory: missing.json"),
        (["upload", "missing.csv", "--campaign", "spring"], "error: no such file: missing.csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_whatever_the_stack(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cli.LOCAL_STATE_VARIABLE, str(tmp_path / "no-stack.json"))

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_a_json_file_that_is_not_an_object_is_refused(tmp_path, capsys):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")

    assert cli.main(["create-campaign", "--json", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path} must hold a JSON object of the command's fields\n"


def test_ctrl_c_exits_130(fake_stack):
    fake_stack.replies = [KeyboardInterrupt()]

    assert cli.main(["status", "spring"]) == 130


# ------------------------------------------------------------------------------------ --stack
TEMPLATE_WITH_OUTPUTS = {
    "Resources": {"ImportsBucket": {"Type": "AWS::S3::Bucket"}},
    "Outputs": {
        "CommandsFunctionName": {"Value": "smsinvite-prod-CommandsFunction-AbC123"},
        "ImportsBucketName": {"Value": {"Ref": "ImportsBucket"}},
    },
}


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def test_a_deployed_stack_is_found_through_its_outputs(aws):
    cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
    cloudformation.create_stack(StackName="smsinvite-prod", TemplateBody=json.dumps(TEMPLATE_WITH_OUTPUTS))
    bucket = boto3.client("s3", region_name="eu-west-1").list_buckets()["Buckets"][0]["Name"]

    target = cli.deployed_target("smsinvite-prod", "eu-west-1")

    assert (target.commands_function, target.bucket) == ("smsinvite-prod-CommandsFunction-AbC123", bucket)
    assert target.lambda_client.meta.region_name == "eu-west-1"


def test_a_missing_deployed_stack_is_one_line_and_exit_2(aws, capsys):
    assert cli.main(["status", "spring", "--stack", "nope", "--region", "eu-west-1"]) == 2
    assert capsys.readouterr().err == "error: ValidationError: Stack with id nope does not exist\n"


# ------------------------------------------------------------------------------------ --watch
def test_progress_bar_shows_percentage():
    assert cli.progress_bar(3, 10) == "[#########.....................]  30% 3/10"
    assert cli.progress_bar(10, 10, width=10) == "[##########] 100% 10/10"


def test_progress_bar_is_full_only_when_every_recipient_is_done():
    assert cli.progress_bar(999, 1000, width=10) == "[#########.]  99% 999/1000"
    assert cli.progress_bar(0, 0, width=10) == "[..........]   0% 0/0"


def test_status_line_shows_counts_until_progress_is_known():
    assert cli.status_line(status("sending")["result"]) == "spring sending  pending 4 sent 6"
    assert cli.status_line(status("sending", done=0, total=0)["result"]) == "spring sending  pending 4 sent 6"
    assert cli.status_line(status("sending", done=6)["result"]).startswith("spring sending  [##################")


def test_watch_redraws_one_line_on_a_terminal_until_the_campaign_completes(fake_stack):
    # Given a campaign that is sending, then completes
    fake_stack.replies = [status("sending", done=3), status("sending", done=7), status("completed", done=10)]
    target, terminal, slept = cli.local_target(), Terminal(), []

    # When the operator watches it on a terminal
    final = cli.watch_status(target, "spring", interval=1.5, out=terminal, sleep=slept.append)

    # Then one line is redrawn per poll, and the watch ends on the settled state
    assert final["state"] == "completed"
    assert slept == [1.5, 1.5]
    redraws = terminal.getvalue().split("\r\x1b[K")
    assert redraws[0] == ""
    assert [line.split("  ", 1)[0] for line in redraws[1:]] == ["spring sending"] * 2 + ["spring completed"]
    assert redraws[-1].endswith("100% 10/10\n")


def test_watch_prints_plain_lines_when_not_a_tty(fake_stack, capsys):
    fake_stack.replies = [status("sending", done=3), status("waiting", done=5)]

    assert cli.main(["status", "spring", "--watch", "--interval", "0"]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "spring sending  [#########.....................]  30% 3/10",
        "spring waiting  [###############...............]  50% 5/10",
    ]
    assert fake_stack.commands == [{"command": "status", "campaign_id": "spring"}] * 2


# ------------------------------------------------------------------------------------ report
def test_report_prints_sections_as_tables():
    result = {
        "campaign_id": "spring",
        "state": "completed",
        "sent": 1200,
        "run": 2,
        "counts": {"delivered": 1180, "failed": 20},
        "cost": {"estimate": {"usd": 9.5}, "segments": 1200},
        "sources": [{"source": "imports/spring/a.csv", "rows": 1000}, {"source": "panel vip", "rows": 200}],
    }

    assert cli.format_report(result) == "\n".join(
        [
            "campaign_id  spring",
            "state        completed",
            "sent         1200",
            "run             2",
            "",
            "counts",
            "======",
            "delivered  1180",
            "failed       20",
            "",
            "cost",
            "====",
            "estimate.usd   9.5",
            "segments      1200",
            "",
            "sources",
            "=======",
            "source                rows",
            "--------------------  ----",
            "imports/spring/a.csv  1000",
            "panel vip              200",
        ]
    )


def test_report_verb_prints_the_report_as_tables(fake_stack, capsys):
    fake_stack.replies = [ok({"campaign_id": "spring", "failures": []})]

    assert cli.main(["report", "spring"]) == 0

    assert fake_stack.commands == [{"command": "report", "campaign_id": "spring"}]
    assert capsys.readouterr().out == "campaign_id  spring\n\nfailures\n========\n(none)\n"
