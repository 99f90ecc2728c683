"""Operator commands, sent as JSON from the AWS console or the CLI."""

from smsinvite.commands import CommandContext, run_command
from smsinvite.errors import SmsInviteError
from smsinvite.importing import ImportRunner
from smsinvite.observability import instrumented, logger
from smsinvite.settings import Settings
from smsinvite.store import Store


@instrumented
def lambda_handler(event: dict, context) -> dict:
    try:
        settings = Settings.from_env()
        store = Store(settings)
        runner = ImportRunner.continuing_on_queue(store, settings)
        time_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
        result = run_command(CommandContext(store, settings, runner, time_left), event)
    except SmsInviteError as error:
        logger.info("command refused", extra={"code": error.code})
        return {"ok": False, "error": error.as_dict()}
    return {"ok": True, "result": result}
