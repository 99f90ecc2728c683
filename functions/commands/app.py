"""Operator commands, sent as JSON from the AWS console or the CLI."""

from smsinvite.commands import run_command
from smsinvite.errors import SmsInviteError
from smsinvite.observability import instrumented, logger
from smsinvite.settings import Settings
from smsinvite.store import Store


@instrumented
def lambda_handler(event: dict, context) -> dict:
    try:
        result = run_command(Store(Settings.from_env()), event)
    except SmsInviteError as error:
        logger.info("command refused", extra={"code": error.code})
        return {"ok": False, "error": error.as_dict()}
    return {"ok": True, "result": result}
