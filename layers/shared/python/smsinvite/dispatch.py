"""Fanning a campaign's audience out to the send queue, a page at a time, resumable from a cursor."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from smsinvite.queues import Queue
from smsinvite.status import Status
from smsinvite.store import Store


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign_id: str = Field(min_length=1, max_length=64)
    cursor: str | None = None  # JSON of DynamoDB's LastEvaluatedKey


@dataclass(frozen=True)
class DispatchPage:
    queued: int
    next_cursor: str | None


class Dispatcher:
    def __init__(self, store: Store, send_queue: Queue, *, page_size: int) -> None:
        self.store = store
        self.send_queue = send_queue
        self.page_size = page_size

    def dispatch_page(self, campaign_id: str, cursor: str | None) -> DispatchPage:
        start = json.loads(cursor) if cursor else None
        page, last_key = self.store.recipients_page(campaign_id, cursor=start, limit=self.page_size)
        # Queueing a recipient twice is harmless (the sender's claim admits one); skipping one is not.
        bodies = [
            {"campaign_id": r.campaign_id, "recipient_id": r.recipient_id}
            for r in page
            if r.status == Status.IMPORTED.value
        ]
        queued = self.send_queue.send_all(bodies)
        next_cursor = json.dumps(last_key) if last_key else None
        self.store.save_dispatch_cursor(campaign_id, next_cursor, queued)
        return DispatchPage(queued, next_cursor)
