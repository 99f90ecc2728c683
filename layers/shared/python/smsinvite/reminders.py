"""Reminders to invitees who have not answered, on a schedule, with their own template and the same code.

Each round is a campaign of kind "reminder" (id `<campaign>.r<n>`, a name no operator can give)
that is always sending, so a reminder goes through the sender like any invitation: the claim (at
most once), the suppression check at that moment, quiet hours and the throttle. A round picks the
invitees whose invitation was delivered (or sent, when delivery is unknown) and whose code is not
completed, up to the campaign's maximum per invitee. A round is repeatable: run again after a crash,
it adds nobody twice and its queued sends are admitted once; only then does the schedule move on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from pynamodb.exceptions import PutError

from smsinvite.batches import DynamoBatches
from smsinvite.errors import InvalidInput
from smsinvite.observability import logger
from smsinvite.phones import LineType, Phone
from smsinvite.queues import Queue
from smsinvite.store import Store, _is_condition_failure, utcnow
from smsinvite.sweeps import sweep
from smsinvite.tables import CampaignRecord

REMINDER_SHARD = "due"
# Reached by the invitation: reminded only if they have not answered.
_REACHED = frozenset({"delivered", "sent"})


@dataclass(frozen=True)
class ReminderPlan:
    template: str
    rounds: tuple[str, ...]  # ISO times of every round, in order
    max_per_invitee: int
    sent_rounds: int = 0

    def as_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "ReminderPlan | None":
        if not text:
            return None
        data = json.loads(text)
        data["rounds"] = tuple(data["rounds"])
        return cls(**data)

    def next_round(self) -> str | None:
        return self.rounds[self.sent_rounds] if self.sent_rounds < len(self.rounds) else None


def plan_rounds(
    start: datetime, now: datetime, *, after_days: float | None = None, every_days: float | None = None,
    until: datetime | None = None, dates: tuple[datetime, ...] = (), max_per_invitee: int,
) -> tuple[datetime, ...]:
    """The times of the reminder rounds: after N days; every N days until answered (up to the maximum)
    or until an end date; or one-off dates. Rounds already past are dropped, never sent late in a burst."""
    if dates:
        rounds = sorted(dates)
    elif every_days:
        step, rounds, at = timedelta(days=every_days), [], start + timedelta(days=every_days)
        limit = until or datetime.max.replace(tzinfo=start.tzinfo)
        while at <= limit and len(rounds) < (max_per_invitee if until is None else 366):
            rounds.append(at)
            at += step
    elif after_days:
        rounds = [start + timedelta(days=after_days)]
    else:
        raise InvalidInput("a reminder schedule needs after_days, every_days or dates")
    return tuple(r for r in rounds if r > now)


def round_campaign_id(campaign_id: str, n: int) -> str:
    return f"{campaign_id}.r{n}"


class Reminders:
    def __init__(self, store: Store, send_queue: Queue, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.send_queue, self.clock = store, send_queue, clock
        self.batches = DynamoBatches()

    def schedule(self, campaign_id: str, plan: ReminderPlan) -> CampaignRecord:
        campaigns = self.store.t.campaigns
        campaign = self.store.campaign(campaign_id)
        if campaign.kind != "survey":
            raise InvalidInput(f"{campaign_id} is not a survey campaign")
        if not plan.rounds:
            raise InvalidInput("every reminder round of that schedule is already past")
        changed = self.store.change_campaign(
            campaign_id,
            [campaigns.reminders.set(plan.as_json()), campaigns.reminder_shard.set(REMINDER_SHARD),
             campaigns.reminder_due_at.set(plan.rounds[0])],
            campaigns.kind == "survey",
        )
        return changed

    def run_due(self, now: datetime, *, time_left: Callable[[], float], margin: float) -> Counter:
        """Every round due by now (the scheduler calls this): rounds run, reminders queued, rounds failed."""
        campaigns, queued = self.store.t.campaigns, Counter()

        def run(key) -> str:
            queued["queued"] += self.run_round(self.store.campaign(key.campaign_id))
            return "rounds"

        due = campaigns.by_reminder.query(REMINDER_SHARD, campaigns.reminder_due_at <= now.isoformat())
        return sweep("reminders", due, run, time_left=time_left, margin=margin) + queued

    def run_round(self, campaign: CampaignRecord) -> int:
        plan = ReminderPlan.from_json(campaign.reminders)
        if plan is None or plan.next_round() is None:
            return 0
        n = plan.sent_rounds + 1
        round_id = self._round_campaign(campaign, plan, n)
        queued = 0
        for invitee in self._targets(campaign, plan):
            phone = Phone(invitee.phone, invitee.region, LineType(invitee.line_type or "other"))
            added = self.store.add_recipient(
                round_id, phone, invitee.fields.as_dict(), import_id=f"reminder:{n}", row_number=0,
                recipient_id=invitee.recipient_id, code=invitee.code, code_expires_at=invitee.code_expires_at,
            )
            if added:
                self._count_reminder(invitee)
            # Queued again on a repeated round: the claim admits one send.
            self.send_queue.send({"campaign_id": round_id, "recipient_id": invitee.recipient_id})
            queued += 1
        self._advance(campaign, plan)
        logger.info("reminder round queued", extra={"campaign_id": campaign.campaign_id, "round": n, "queued": queued})
        return queued

    def _round_campaign(self, campaign: CampaignRecord, plan: ReminderPlan, n: int) -> str:
        round_id = round_campaign_id(campaign.campaign_id, n)
        record = self.store.new_campaign(
            campaign_id=round_id, kind="reminder", state="sending", run=1, started_at=self.clock(),
            name=f"{campaign.name} (reminder {n})", survey_url=campaign.survey_url, message_template=plan.template,
            sender=campaign.sender, default_region=campaign.default_region, rate_per_second=campaign.rate_per_second,
            window_opens=campaign.window_opens, window_closes=campaign.window_closes,
        )
        try:
            record.save(condition=self.store.t.campaigns.campaign_id.does_not_exist())
        except PutError as exc:
            if not _is_condition_failure(exc):
                raise
        return round_id

    def _targets(self, campaign: CampaignRecord, plan: ReminderPlan):
        reached = [
            r for r in self.store.t.recipients.query(campaign.campaign_id, consistent_read=True)
            if r.status in _REACHED and r.code and int(r.reminders_sent or 0) < plan.max_per_invitee
        ]
        answered = {c.code for c in self.batches.get(self.store.t.codes, [(r.code,) for r in reached])
                    if c.completed_at is not None}
        suppressed = self.store.suppressed_among(self.batches, {r.phone for r in reached})
        return [r for r in reached if r.code not in answered and r.phone not in suppressed]

    def _count_reminder(self, invitee) -> None:
        recipients = self.store.t.recipients
        recipients(invitee.campaign_id, invitee.recipient_id).update(actions=[recipients.reminders_sent.add(1)])

    def _advance(self, campaign: CampaignRecord, plan: ReminderPlan) -> None:
        campaigns = self.store.t.campaigns
        moved = ReminderPlan(**{**asdict(plan), "sent_rounds": plan.sent_rounds + 1})
        following = moved.next_round()
        actions = [campaigns.reminders.set(moved.as_json())]
        if following:
            actions.append(campaigns.reminder_due_at.set(following))
        else:
            actions += [campaigns.reminder_shard.remove(), campaigns.reminder_due_at.remove()]
        # Conditioned on the plan this round read: a round run twice at once moves the schedule once.
        self.store.change_campaign(campaign.campaign_id, actions, campaigns.reminders == campaign.reminders)
