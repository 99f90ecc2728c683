"""Storage of the throttle's lanes: one item per lane in the throttle table, moved by compare-and-set.

A reservation writes every lane it plans for in one transaction, each on condition that `next_at`
is still what the plan was made from. A lost race reads the lanes again and plans again; the
write that wins is the only one that took those slots, whichever instance made it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from botocore.exceptions import ClientError

from smsinvite import aws_clients
from smsinvite.throttle import Busy, Lane, Reservation, plan

_MAX_RACES = 50


class LanesBusy(RuntimeError):
    """Other instances kept winning the lanes; the caller should try again later."""


class ThrottleLanes:
    def __init__(
        self, table_name: str, *, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
        client=None,
    ) -> None:
        self.table_name = table_name
        self.clock = clock
        self.sleep = sleep
        self._client = client
        # What this invocation last saw of each lane: a first plan without a read, a lost race re-read.
        self._seen: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self.requests = 0

    @property
    def client(self):
        return self._client or aws_clients.client("dynamodb")

    def reserve(self, lanes: Sequence[Lane], *, count: int, max_wait: float, lead: float = 0.0) -> Reservation | Busy:
        """Slots from `lead` seconds ahead on (time to claim before the first one), within `max_wait` of that."""
        # The threads of one invocation take turns: they then race only other instances, not each other.
        with self._lock:
            unseen = [lane.key for lane in lanes if lane.key not in self._seen]
            if unseen:
                self._read(unseen)
            for race in range(_MAX_RACES):
                decided = plan(lanes, self._seen, count=count, now=self.clock() + lead, max_wait=max_wait)
                if isinstance(decided, Busy):
                    return decided
                if self._write(lanes, decided):
                    self._seen.update(decided.next_at)
                    return decided
                # Instances that lost a race back off by a random few milliseconds, so they stop colliding.
                self.sleep(random.uniform(0, 0.002 * min(race + 1, 10)))
            raise LanesBusy("the send slots stayed contended; try again")

    def _read(self, keys: list[str]) -> None:
        self.requests += 1
        response = self.client.batch_get_item(
            RequestItems={self.table_name: {"Keys": [{"lane": {"S": key}} for key in keys], "ConsistentRead": True}}
        )
        found = {
            item["lane"]["S"]: float(item["next_at"]["N"])
            for item in response.get("Responses", {}).get(self.table_name, [])
        }
        for key in keys:
            self._seen[key] = found.get(key)
        # Unprocessed keys (throttling) are simply unknown: the conditional write then re-reads them.

    def _write(self, lanes: Sequence[Lane], reservation: Reservation) -> bool:
        items = []
        for lane in lanes:
            old = self._seen.get(lane.key)
            update = {
                "TableName": self.table_name,
                "Key": {"lane": {"S": lane.key}},
                "UpdateExpression": "SET next_at = :new",
                "ExpressionAttributeValues": {":new": {"N": _number(reservation.next_at[lane.key])}},
            }
            if old is None:
                update["ConditionExpression"] = "attribute_not_exists(next_at)"
            else:
                update["ConditionExpression"] = "next_at = :old"
                update["ExpressionAttributeValues"][":old"] = {"N": _number(old)}
            items.append(update)
        self.requests += 1
        try:
            if len(items) == 1:
                self.client.update_item(**items[0], ReturnValuesOnConditionCheckFailure="ALL_OLD")
            else:
                self.client.transact_write_items(
                    TransactItems=[{"Update": {**item, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}} for item in items]
                )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code not in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise
            self._learn(lanes, error.response)
            return False
        return True

    def _learn(self, lanes: Sequence[Lane], response: dict) -> None:
        """What a lost race says the lanes hold now; a read only when DynamoDB did not say."""
        if "Item" in response:
            olds = [response["Item"]]
        else:
            olds = [reason.get("Item") for reason in response.get("CancellationReasons", [])]
        if len(olds) == len(lanes) and all(old is not None for old in olds):
            for lane, old in zip(lanes, olds):
                self._seen[lane.key] = float(old["next_at"]["N"]) if "next_at" in old else None
        else:
            self._read([lane.key for lane in lanes])


def _number(value: float) -> str:
    # Exact round trips: the condition compares the very number that was written.
    return str(Decimal(repr(value)))
