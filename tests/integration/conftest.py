"""Fixtures every integration test shares: a Store on DynamoDB Local, and a fresh campaign."""

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
