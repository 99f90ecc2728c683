"""DynamoDB batch adapter: BatchGetItem and BatchWriteItem, with what DynamoDB leaves undone retried.

DynamoDB may return UnprocessedKeys / UnprocessedItems, or refuse a call with a throttling error;
both are retried with exponential backoff and jitter, so a throttled table slows an import down
but never drops a row. After `max_attempts` the error is raised: the caller's checkpoint makes the
retry of the whole chunk safe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence

from botocore.exceptions import ClientError
from pynamodb.models import Model

from smsinvite import aws_clients

GET_BATCH = 100
WRITE_BATCH = 25
THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError"}
)


class BatchIncomplete(RuntimeError):
    """DynamoDB still refused part of a batch after every retry."""


class DynamoBatches:
    def __init__(
        self,
        client=None,
        *,
        max_attempts: int = 10,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.requests = 0  # calls made, for the benchmarks' requests-per-row figure

    @property
    def client(self):
        return self._client or aws_clients.client("dynamodb")

    def get(self, model: type[Model], keys: Sequence[tuple[str, ...]]) -> list[Model]:
        """The items that exist among `keys` (hash, or hash and range, all strings), in no order."""
        table = model.Meta.table_name
        names = [model._hash_keyname] + ([model._range_keyname] if model._range_keyname else [])
        found: list[Model] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), GET_BATCH):
            pending = {
                table: {
                    "Keys": [{name: {"S": value} for name, value in zip(names, key)} for key in unique[start : start + GET_BATCH]],
                    "ConsistentRead": True,
                }
            }
            for attempt in self._attempts():
                response = self._call(self.client.batch_get_item, RequestItems=pending)
                if response is None:
                    continue
                found.extend(model.from_raw_data(item) for item in response.get("Responses", {}).get(table, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return found

    def put(self, model: type[Model], items: Iterable[dict]) -> int:
        """Write every item (DynamoDB JSON, see tables.raw_item) to the model's table, overwriting."""
        table = model.Meta.table_name
        requests = [{"PutRequest": {"Item": item}} for item in items]
        written = 0
        if requests:
            for start in range(0, len(requests), WRITE_BATCH):
                pending = {table: requests[start : start + WRITE_BATCH]}
                for attempt in self._attempts():
                    response = self._call(self.client.batch_write_item, RequestItems=pending)
                    if response is None:
                        continue
                    pending = response.get("UnprocessedItems") or {}
                    if not pending:
                        break
                written += len(requests[start : start + WRITE_BATCH])
        return written

    def _attempts(self):
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                self.sleep(delay * (0.5 + random.random() / 2))
            yield attempt
        raise BatchIncomplete(f"DynamoDB left part of a batch undone after {self.max_attempts} attempts")

    def _call(self, operation, **kwargs):
        self.requests += 1
        try:
            return operation(**kwargs)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in THROTTLING_CODES:
                return None  # the whole call was refused: retry it after the backoff
            raise
