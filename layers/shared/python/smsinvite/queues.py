"""SQS adapter: batched sends whose failed entries are retried, so nothing queued is dropped."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from smsinvite import aws_clients

_BATCH = 10
_ATTEMPTS = 5


class Queue:
    def __init__(self, url: str, client=None) -> None:
        self.url = url
        self._client = client

    @property
    def client(self):
        return self._client or aws_clients.client("sqs")

    def send(self, body: dict, *, delay_seconds: int = 0) -> None:
        self.client.send_message(QueueUrl=self.url, MessageBody=json.dumps(body), DelaySeconds=delay_seconds)

    def send_all(self, bodies: Iterable[dict]) -> int:
        """SendMessageBatch in tens; entries SQS reports as failed are sent again with backoff."""
        sent = 0
        batch: list[dict] = []
        for body in bodies:
            batch.append(body)
            if len(batch) == _BATCH:
                sent += self._send_batch(batch)
                batch = []
        if batch:
            sent += self._send_batch(batch)
        return sent

    def _send_batch(self, bodies: list[dict]) -> int:
        pending = {str(i): json.dumps(body) for i, body in enumerate(bodies)}
        for attempt in range(_ATTEMPTS):
            entries = [{"Id": key, "MessageBody": body} for key, body in pending.items()]
            response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            for failed in response.get("Failed", []):
                if failed.get("SenderFault"):
                    raise ValueError(f"SQS refused a message: {failed.get('Code')}")
            pending = {f["Id"]: pending[f["Id"]] for f in response.get("Failed", [])}
            if not pending:
                return len(bodies)
            time.sleep(min(2.0, 0.05 * 2**attempt))
        raise RuntimeError(f"{len(pending)} messages could not be queued after {_ATTEMPTS} attempts")
