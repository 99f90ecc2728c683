"""Fixtures every integration test shares: a Store on DynamoDB Local, a fresh campaign, and campaigns ready to send."""

import uuid

import pytest

from smsinvite.store import Store


@pytest.fixture
def store(local_aws):
    return Store(local_aws)


@pytest.fixture
def campaign_id(store):
    campaign_id = f"c-{uuid.uuid4().hex[:10]}"
    store.create_campaign(
        store.new_campaign(
            campaign_id=campaign_id, name="t", survey_url="https://s.example", message_template="Hi {link}"
        )
    )
    return campaign_id


@pytest.fixture
def runner(store, local_aws):
    from smsinvite.importing import ImportRunner

    return ImportRunner(store, local_aws, continue_later=lambda import_id, delay: None)


@pytest.fixture
def lifecycle(store, local_aws):
    from smsinvite.lifecycle import CampaignLifecycle
    from smsinvite.queues import Queue

    return CampaignLifecycle(store, Queue(local_aws.dispatch_queue_url))


@pytest.fixture
def sending_campaign(store, local_aws, runner, lifecycle):
    """A factory: a campaign with these people, prepared and approved (so `sending`), as an operator does it."""
    from smsinvite.preparation import Preparer

    def make(people: list[dict], **attributes) -> str:
        campaign_id = f"s-{uuid.uuid4().hex[:10]}"
        defaults = {"name": "t", "survey_url": "https://s.example", "message_template": "Hi {first_name|there} {link}"}
        store.create_campaign(store.new_campaign(campaign_id=campaign_id, **{**defaults, **attributes}))
        record, _ = runner.register_list(campaign_id, people, "people")
        runner.run(record.import_id, time_left=lambda: 60.0, margin=5.0)
        Preparer(store, local_aws, runner).prepare(campaign_id, time_left=lambda: 60.0, margin=5.0)
        lifecycle.approve(campaign_id)
        return campaign_id

    return make


@pytest.fixture(scope="module")
def twilio():
    """The Twilio simulator, one per module: its ledger is the witness of what was sent."""
    from local.twilio_sim import TwilioSimulator

    simulator = TwilioSimulator().start()
    yield simulator
    simulator.stop()


@pytest.fixture
def settings(local_aws):
    """The functions' settings, with status callbacks to a closed port on 127.0.0.1: these tests are about
    the send, not the webhooks."""
    import dataclasses

    return dataclasses.replace(local_aws, public_webhook_base_url="http://127.0.0.1:9")
