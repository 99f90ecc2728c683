"""DynamoDB batch adapter: BatchGetItem and BatchWriteItem, with what DynamoDB leaves undone retried.

DynamoDB may return UnprocessedKeys / UnprocessedItems, or refuse a call with a throttling error;
both are retried with exponential backoff and jitter, so a throttled table slows an import down
but never drops a row. After `max_attempts` the error is raised: the caller's checkpoint makes the
retry of the whole chunk safe. DynamoDB refuses a whole batch for one item over its 400 KB limit;
such an item is left out and named, and the rest of its batch is written.
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
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item limit, names and values included
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
            for _attempt in self._attempts():
                response = self._call(self.client.batch_get_item, RequestItems=pending)
                if response is None:
                    continue
                found.extend(model.from_raw_data(item) for item in response.get("Responses", {}).get(table, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return found

    def put(self, model: type[Model], items: Iterable[dict]) -> set[int]:
        """Write every item (DynamoDB JSON, see tables.raw_item) to the model's table, overwriting.

        Returns the positions (in `items`) of those DynamoDB refused as larger than an item may be;
        every other item is written.
        """
        table = model.Meta.table_name
        items = list(items)
        refused: set[int] = set()
        for start in range(0, len(items), WRITE_BATCH):
            refused |= self._write(table, items, range(start, min(start + WRITE_BATCH, len(items))))
        return refused

    def _write(self, table: str, items: list[dict], positions: Sequence[int]) -> set[int]:
        if not positions:
            return set()
        pending = {table: [{"PutRequest": {"Item": items[i]}} for i in positions]}
        try:
            for _attempt in self._attempts():
                response = self._call(self.client.batch_write_item, RequestItems=pending)
                if response is None:
                    continue
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    return set()
        except ClientError as error:
            too_large = {i for i in positions if item_size(items[i]) > MAX_ITEM_BYTES}
            if error.response.get("Error", {}).get("Code") != "ValidationException" or not too_large:
                raise
            return too_large | self._write(table, items, [i for i in positions if i not in too_large])
        return set()

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


def item_size(item: dict) -> int:
    """The bytes DynamoDB counts for an item in its JSON (names and values, UTF-8, with map and list overhead;
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(name.encode()) + _value_size(element) + 1 for name, element in data.items())
    if kind == "L":
        return 3 + sum(_value_size(element) + 1 for element in data)
    if kind == "SS":
        return sum(len(element.encode()) for element in data)
    return len(data) if isinstance(data, (bytes, str)) else sum(len(str(element)) for element in data)
