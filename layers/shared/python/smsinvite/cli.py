"""The smsinvite CLI: the console's JSON commands from a terminal, and uploads to the imports bucket.

    smsinvite create-campaign --json campaign.json --set campaign_id=spring
    smsinvite upload customers.csv --campaign spring
    smsinvite status spring --watch
    smsinvite report spring

Each verb sends the command of the same name (`add-recipients` -> `add_recipients`) to the commands
function with boto3's lambda client. By default that is the local stack `make up` runs, found through
the state file it writes; `--stack NAME` is a deployed stack, found through its CloudFormation outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

LOCAL_STATE_VARIABLE = "SMSINVITE_LOCAL_STATE"
NO_LOCAL_STACK = "no local stack running: start it with `make up`, or pass --stack NAME"

CAMPAIGN_VERBS = {
    "update-campaign": "change a draft campaign's fields",
    "add-recipients": "add recipients listed in the command (--json with a recipients list)",
    "add-panel": "add a panel's members (--set panel_id=ID)",
    "prepare": "build the audience and the preview; nothing is sent",
    "approve": "start sending a prepared campaign",
    "pause": "pause sending",
    "resume": "resume a paused campaign",
    "cancel": "cancel the campaign",
    "resend-unresolved": "send again, on purpose, the recipients whose send ended unresolved",
    "status": "the campaign's state and counts (--watch to follow it)",
    "report": "the campaign's report, as tables",
    "export": "write the per-recipient CSV export to the bucket (--set full_numbers=true for whole numbers)",
    "schedule-reminders": "remind invitees who have not answered (--set template=... --set every_days=3)",
}
# Commands that name no campaign; their fields come from --json and --set.
FIELD_VERBS = {
    "create-list": "create a subscription list (--set list_id=ID --set name=... --set confirmation_text=...)",
    "subscribe": "ask numbers to join a list: a confirmation SMS, active once they reply YES",
    "unsubscribe": "end numbers' subscriptions to a list",
    "erase-phone": "remove a number's personal data everywhere; it stays blocked (--set phone=+1...)",
    "export-consent": "write the consent ledger as CSV to the bucket (--set phone=... for one number)",
}
# --watch stops at these: the campaign is done, or waits for the operator.
SETTLED_STATES = frozenset({"completed", "cancelled", "waiting", "draft", "prepared"})

# A command is not idempotent in general, so it is never resent; and it may run as long as a Lambda does.
INVOKE_CONFIG = Config(connect_timeout=5, read_timeout=900, retries={"total_max_attempts": 1})


class CliError(Exception):
    """A problem on this side (no stack, a bad flag, a missing file): one line, exit 2."""


class CommandRefused(Exception):
    """The commands function refused the command (`{"ok": false, ...}`): one line, exit 1."""

    def __init__(self, error: dict) -> None:
        parts = [error.get("message", "the command was refused"), *error.get("details", [])]
        super().__init__("; ".join(parts))


# ------------------------------------------------------------------------------------------- target
def local_state_path() -> Path:
    """Where `make up` writes what the CLI needs to reach it."""
    configured = os.environ.get(LOCAL_STATE_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "smsinvite" / "local-stack.json"


@dataclass(frozen=True)
class Target:
    """A stack's commands function and imports bucket, with the clients that reach them."""

    commands_function: str
    bucket: str
    lambda_client: Any
    s3_client: Any

    def run(self, command: dict) -> Any:
        response = self.lambda_client.invoke(
            FunctionName=self.commands_function, Payload=json.dumps(command).encode("utf-8")
        )
        reply = json.loads(response["Payload"].read() or b"null")
        if "FunctionError" in response:
            error = f"{reply.get('errorType')}: {reply.get('errorMessage')}"
            raise CliError(f"{self.commands_function} failed: {error}")
        if not reply.get("ok"):
            raise CommandRefused(reply.get("error", {}))
        return reply["result"]

    def upload(self, path: Path, key: str) -> None:
        self.s3_client.upload_file(str(path), self.bucket, key)


def target_of(args: argparse.Namespace) -> Target:
    return deployed_target(args.stack, args.region) if args.stack else local_target()


def local_target() -> Target:
    path = local_state_path()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        # The local stack takes any credentials: never send it the developer's real ones.
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=state["region"]
        )
        return Target(
            commands_function=state["commands_function"],
            bucket=state["bucket"],
            lambda_client=session.client("lambda", endpoint_url=state["lambda_endpoint"], config=INVOKE_CONFIG),
            s3_client=session.client("s3", endpoint_url=state["aws_endpoint"]),
        )
    except FileNotFoundError:
        raise CliError(NO_LOCAL_STACK) from None
    except (ValueError, KeyError):
        raise CliError(f"{path} is not a local stack's state file: remove it and run `make up`") from None


def deployed_target(stack_name: str, region: str | None) -> Target:
    session = boto3.session.Session(region_name=region)  # None: the region the environment configures
    stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    missing = [name for name in ("CommandsFunctionName", "ImportsBucketName") if name not in outputs]
    if missing:
        raise CliError(f"stack {stack_name} has no output {', '.join(missing)}: is it an smsinvite stack?")
    return Target(
        commands_function=outputs["CommandsFunctionName"],
        bucket=outputs["ImportsBucketName"],
        lambda_client=session.client("lambda", config=INVOKE_CONFIG),
        s3_client=session.client("s3"),
    )


# ------------------------------------------------------------------------------------------ commands
def read_fields(source: str) -> dict:
    """A command's fields from a JSON file, or from stdin for `-`."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    name = "stdin" if source == "-" else source
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise CliError(f"{name} is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise CliError(f"{name} must hold a JSON object of the command's fields")
    return fields


def apply_setting(fields: dict, setting: str) -> None:
    """`key=value`: the value is JSON when it parses as JSON, else a string; `a.b=1` sets fields["a"]["b"]."""
    key, equals, raw = setting.partition("=")
    path = key.split(".")
    if not equals or not all(path):
        raise CliError(f"--set {setting!r}: expected key=value, with a dotted key for a nested field")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    parent = fields
    for name in path[:-1]:
        parent = parent.setdefault(name, {})
        if not isinstance(parent, dict):
            raise CliError(f"--set {setting!r}: {name} is already set, and is not an object")
    parent[path[-1]] = value


def build_command(verb: str, json_file: str | None, settings: list[str], campaign_id: str | None) -> dict:
    fields = read_fields(json_file) if json_file else {}
    for setting in settings:
        apply_setting(fields, setting)
    if campaign_id is not None:
        fields["campaign_id"] = campaign_id
    fields.pop("command", None)  # the verb names the command, whatever a pasted console event says
    return {"command": verb.replace("-", "_"), **fields}


def upload_key(args: argparse.Namespace) -> str:
    if args.campaign:
        prefix = f"imports/{args.campaign}/"
    elif args.panel:
        prefix = f"panels/{args.panel}/"
    elif args.tokens:
        prefix = f"tokens/{args.tokens}/"
    else:
        prefix = "suppressions/"
    return prefix + args.file.name


# -------------------------------------------------------------------------------------------- output
def progress_bar(done: int, total: int, width: int = 30) -> str:
    """`[#########.....................]  30% 3/10`; full only when every recipient is done."""
    share = min(max(done, 0), total) / total if total > 0 else 0.0
    filled = int(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {int(share * 100):3d}% {done}/{total}"


def status_line(result: dict) -> str:
    """One line of --watch: the state, then progress, or the non-zero counts while no run has started."""
    progress = result.get("progress") or {}
    if progress.get("total"):
        detail = progress_bar(progress.get("done", 0), progress["total"])
    else:
        counts = result.get("counts") or {}
        detail = " ".join(f"{status} {n}" for status, n in counts.items() if n) or "no recipients"
    return f"{result.get('campaign_id', '')} {result.get('state')}  {detail}"


def watch_status(
    target: Target,
    campaign_id: str,
    *,
    interval: float,
    json_output: bool = False,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll the status command until the campaign settles; redraw one line on a terminal."""
    out = out or sys.stdout
    redraw = out.isatty() and not json_output
    try:
        while True:
            result = target.run({"command": "status", "campaign_id": campaign_id})
            if json_output:
                print(json.dumps(result, ensure_ascii=False), file=out, flush=True)
            elif redraw:
                # A line wider than the terminal would wrap, and "\r" could no longer redraw it.
                width = shutil.get_terminal_size().columns - 1
                out.write("\r\x1b[K" + status_line(result)[:width])
                out.flush()
            else:
                print(status_line(result), file=out, flush=True)
            if result.get("state") in SETTLED_STATES:
                return result
            sleep(interval)
    finally:
        if redraw:
            out.write("\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and not any(isinstance(item, (dict, list)) for item in value):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    """Columns two spaces apart. Numbers are right-aligned on the widest number of their column, so
    they line up even beside longer text; a column of numbers only has its header right-aligned too."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(map(len, column)) for column in zip(*([header] if header else []), *cells)]
    all_numbers, number_widths = [], []
    for i, width in enumerate(widths):
        numbers = [texts[i] for texts, row in zip(cells, rows) if _is_number(row[i])]
        all_numbers.append(bool(rows) and len(numbers) == len(rows))
        number_widths.append(width if all_numbers[-1] else max(map(len, numbers), default=0))

    def line(texts: list[str], numbers: list[bool]) -> str:
        padded = [
            (text.rjust(number_widths[i]) if number else text).ljust(widths[i])
            for i, (text, number) in enumerate(zip(texts, numbers))
        ]
        return "  ".join(padded).rstrip()

    lines = []
    if header:
        lines += [line(header, all_numbers), "  ".join("-" * width for width in widths)]
    lines += [line(texts, [_is_number(value) for value in row]) for texts, row in zip(cells, rows)]
    return "\n".join(lines)


def _section(title: str, body: str) -> str:
    return f"{title}\n{'=' * len(title)}\n{body or '(none)'}"


def _list_table(items: list) -> str:
    if not all(isinstance(item, dict) for item in items):
        return "\n".join(_cell(item) for item in items)
    rows = [_flatten(item) for item in items]
    columns = list(dict.fromkeys(column for row in rows for column in row))
    return _table([[row.get(column) for column in columns] for row in rows], header=columns)


def format_report(result: dict) -> str:
    """The report as text: scalars as a key/value table, each object as a titled key/value section
    (nested objects flattened to dotted keys), each list of objects as a titled table with columns."""
    scalars = [[key, value] for key, value in result.items() if not isinstance(value, (dict, list))]
    parts = [_table(scalars)] if scalars else []
    for key, value in result.items():
        if isinstance(value, dict):
            parts.append(_section(key, _table([[k, v] for k, v in _flatten(value).items()])))
        elif isinstance(value, list):
            parts.append(_section(key, _list_table(value)))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- main
def _add_target_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """On the main parser and on each verb, so that they may come before or after the verb.

    A verb's copies have no defaults: otherwise they would undo a value given before the verb.
    """
    unset = {} if with_defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--stack", metavar="NAME", help="a deployed CloudFormation stack (default: the local stack)", **unset
    )
    parser.add_argument("--region", help="the deployed stack's region (default: from the environment)", **unset)
    parser.add_argument("--json-output", action="store_true", help="print the raw JSON result", **unset)


def _add_field_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", dest="json_file", metavar="FILE", help="the command's fields, as a JSON object (- for stdin)"
    )
    parser.add_argument(
        "--set", dest="settings", metavar="KEY=VALUE", action="append", default=[],
        help="a field (VALUE is JSON if it parses, else a string; KEY may be dotted: audience.panels=[\"vip\"])",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsinvite", allow_abbrev=False, description="Send smsinvite commands and uploads to a stack."
    )
    _add_target_options(parser, with_defaults=True)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        _add_target_options(sub, with_defaults=False)
        return sub

    _add_field_options(verb("create-campaign", "create a draft campaign; campaign_id comes from its fields"))
    for name, help_text in FIELD_VERBS.items():
        _add_field_options(verb(name, help_text))
    for name, help_text in CAMPAIGN_VERBS.items():
        sub = verb(name, help_text)
        sub.add_argument("campaign_id", metavar="CAMPAIGN_ID")
        _add_field_options(sub)
        if name == "status":
            sub.add_argument("--watch", action="store_true", help="poll until the campaign settles (Ctrl-C stops)")
            sub.add_argument(
                "--interval", type=float, default=2.0, metavar="SECONDS", help="between polls (default 2)"
            )

    upload = verb("upload", "put a CSV in the imports bucket, under the prefix that imports it")
    upload.add_argument("file", type=Path, metavar="FILE")
    where = upload.add_mutually_exclusive_group(required=True)
    where.add_argument("--campaign", metavar="ID", help="recipients: imports/ID/")
    where.add_argument("--panel", metavar="ID", help="panel members: panels/ID/")
    where.add_argument("--tokens", metavar="ID", help="the campaign's invitation codes: tokens/ID/")
    where.add_argument("--suppressions", action="store_true", help="numbers for the blocklist: suppressions/")
    return parser


def run(args: argparse.Namespace) -> None:
    # The input is checked before the stack is looked up, so a bad flag or file is reported as such.
    if args.verb == "upload":
        if not args.file.is_file():
            raise CliError(f"no such file: {args.file}")
        key = upload_key(args)
        target = target_of(args)
        target.upload(args.file, key)
        print(json.dumps({"bucket": target.bucket, "key": key}) if args.json_output else key)
        return
    command = build_command(args.verb, args.json_file, args.settings, getattr(args, "campaign_id", None))
    target = target_of(args)
    if args.verb == "status" and args.watch:
        watch_status(target, args.campaign_id, interval=args.interval, json_output=args.json_output)
        return
    result = target.run(command)
    if args.json_output:
        print(json.dumps(result, ensure_ascii=False))
    elif args.verb == "report":
        print(format_report(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))


def _fail(message: str, code: int) -> int:
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse has printed
        return int(exit_request.code or 0)
    try:
        run(args)
    except CommandRefused as refused:
        return _fail(str(refused), 1)
    except KeyboardInterrupt:
        return 130
    except EndpointConnectionError as error:
        hint = "" if args.stack else "; is `make up` still running?"
        return _fail(f"{error}{hint}", 2)
    except ClientError as error:  # its str() names the operation and botocore's retry count
        details = error.response.get("Error", {})
        return _fail(f"{details.get('Code', 'ClientError')}: {details.get('Message', error)}", 2)
    except (CliError, BotoCoreError) as error:
        return _fail(str(error), 2)
    except OSError as error:
        return _fail(f"{error.strerror}: {error.filename}" if error.filename else str(error), 2)
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        return _fail(f"unexpected {type(error).__name__}: {error}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
