"""Erasure: a number's personal data leaves every table and report it reached; a hash keeps it blocked.

What stays is the suppression entry under the number's keyed hash (reason `erased`), so a later
import or subscribe of the number is still refused, and recipients' statuses (now under the hash,
without their fields) so campaign counts still add up. Everything else is deleted or rewritten.
"""

from __future__ import annotations

import csv
import io
import re

import phonenumbers

from smsinvite import aws_clients
from smsinvite.observability import logger, mask_phone
from smsinvite.reports import REPORTS_PREFIX
from smsinvite.settings import Settings
from smsinvite.store import Store, utcnow


class Erasure:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def erase(self, phone: str) -> dict:
        store, t = self.store, self.store.t
        key = store.phone_key(phone)
        erased = {
            "recipients": self._recipients(phone, key),
            "inbox": self._delete_all(t.inbox.query(phone)),
            "subscriptions": self._delete_all(
                t.subscriptions.get(k.list_id, k.phone) for k in t.subscriptions.by_phone.query(phone)
            ),
            "panel_members": self._delete_all(t.panels.scan(t.panels.phone == phone)),
            "consent_entries": self._delete_all(t.consent.query(key)),
            "report_rows": self._reports(phone),
        }
        self._keep_blocked(key)
        logger.info("number erased", extra={"phone": mask_phone(phone), **erased})
        return {"erased": erased, "suppression": "kept under the number's hash (reason erased)"}

    def _recipients(self, phone: str, key: str) -> int:
        recipients = self.store.t.recipients
        n = 0
        for found in recipients.by_phone.query(phone):
            recipients(found.campaign_id, found.recipient_id).update(
                actions=[recipients.phone.set(key), recipients.fields.set({}), recipients.region.remove()]
            )
            n += 1
        return n

    @staticmethod
    def _delete_all(items) -> int:
        n = 0
        for item in items:
            item.delete()
            n += 1
        return n

    def _keep_blocked(self, key: str) -> None:
        suppressions = self.store.t.suppressions
        suppressions(key).update(actions=[
            suppressions.reason.set("erased"),
            suppressions.source.set("erasure"),
            suppressions.created_at.set(suppressions.created_at | utcnow()),
            suppressions.phone.remove(),
            suppressions.scope.remove(),
            suppressions.import_id.remove(),
            suppressions.row_number.remove(),
        ])

    def _reports(self, phone: str) -> int:
        """Rewrite every CSV under reports/ without the rows that hold the number, in any format."""
        s3, bucket = aws_clients.client("s3"), self.settings.imports_bucket
        matches = _matcher(phone)
        removed = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=REPORTS_PREFIX):
            for summary in page.get("Contents", []):
                key = summary["Key"]
                text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", errors="replace")
                kept, dropped = _without(text, matches)
                if not dropped:
                    continue
                written = s3.put_object(Bucket=bucket, Key=key, Body=kept.encode("utf-8"))
                self._drop_old_versions(s3, bucket, key, written.get("VersionId"))
                removed += dropped
        return removed

    @staticmethod
    def _drop_old_versions(s3, bucket: str, key: str, current: str | None) -> None:
        """The bucket is versioned: older versions of a rewritten report still hold the number."""
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if version["Key"] == key and version["VersionId"] not in (current, "null"):
                    s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def _matcher(phone: str):
    """A cell holds the number when its digits are the number's, with or without country code or trunk 0."""
    parsed = phonenumbers.parse(phone)
    national = phonenumbers.national_significant_number(parsed)
    full = f"{parsed.country_code}{national}"

    def matches(cell: str) -> bool:
        digits = re.sub(r"\D", "", cell)
        return digits in (full, national, "0" + national, "00" + full, "011" + full, "1" + national)

    return matches


def _without(text: str, matches) -> tuple[str, int]:
    rows = list(csv.reader(io.StringIO(text)))
    kept = [row for row in rows if not any(matches(cell) for cell in row)]
    if len(kept) == len(rows):
        return text, 0
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(kept)
    return buffer.getvalue(), len(rows) - len(kept)
