"""Lambda's Invoke API for the local stack, so that a plain boto3 lambda client can call its functions.

`POST /2015-03-31/functions/{FunctionName}/invocations`, RequestResponse only, on 127.0.0.1. The function
is named by its logical id in template.yaml ("CommandsFunction") or by its local physical name; it runs
through the router, in this process, and the reply has the shape Lambda gives it:
- 200 with the handler's JSON result;
- 200 with `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` when the handler raised;
- 404 `ResourceNotFoundException` for a function the template does not have;
- 400 for a payload that is not JSON, or an invocation type other than RequestResponse.

Errors carry `x-amzn-ErrorType`, which is how botocore picks the exception it raises. Like the router,
this server never logs payloads: commands hold phone numbers.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from local.router import STOP_JOIN_SECONDS, Router, lambda_error

LOG = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


@dataclass(frozen=True)
class LambdaReply:
    status: int
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, body: Any, headers: dict[str, str] | None = None) -> LambdaReply:
        return cls(status, json.dumps(body).encode("utf-8"), headers or {})


def _service_error(status: int, error_type: str, message: str) -> LambdaReply:
    return LambdaReply.of(status, {"Type": "User", "message": message}, {"x-amzn-ErrorType": error_type})


def _function_error(error_type: str, message: str) -> LambdaReply:
    body = {"errorMessage": message, "errorType": error_type}
    return LambdaReply.of(200, body, {"X-Amz-Function-Error": "Unhandled"})


class LambdaInvokeApi:
    """A ThreadingHTTPServer that serves Lambda's Invoke operation for the router's functions."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0) -> None:
        self.router = router
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LambdaInvokeApi:
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="lambda-invoke-api", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=STOP_JOIN_SECONDS)
        self.server.server_close()

    def function_named(self, name: str) -> str | None:
        """The logical id of the function `name` names: its logical id or its physical name."""
        for spec in self.router.functions.values():
            if name in (spec.logical_id, spec.name):
                return spec.logical_id
        return None

    def invoke(self, method: str, target: str, headers: Message, body: bytes) -> LambdaReply:
        match = INVOKE_PATH.match(urlsplit(target).path)
        if method != "POST" or match is None:
            return _service_error(404, "UnknownOperationException", "Unknown operation")
        name = unquote(match["name"])
        logical_id = self.function_named(name)
        if logical_id is None:
            return _service_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        invocation_type = headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type != "RequestResponse":
            return _service_error(
                400, "InvalidParameterValueException", f"{invocation_type} invocations are not served locally"
            )
        try:
            event = json.loads(body or b"{}")  # Lambda hands an empty payload to the handler as {}
        except ValueError:
            return _service_error(400, "InvalidRequestContentException", "Could not parse request body into json")
        try:
            result = self.router.invoke(logical_id, event)
        except Exception as error:  # noqa: BLE001 - Lambda reports whatever the handler raised
            document = lambda_error(error)
            return _function_error(document["errorType"], document["errorMessage"])
        try:
            return LambdaReply.of(200, result)
        except (TypeError, ValueError) as error:  # what Lambda's Python runtime says of such a result
            return _function_error("Runtime.MarshalError", f"Unable to marshal response: {error}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "smsinvite-local-lambda"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = api.invoke(self.command, self.path, self.headers, body)
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.payload)))
                self.end_headers()
                self.wfile.write(reply.payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                LOG.debug("Lambda Invoke API %s answered", self.command)

        return Handler
