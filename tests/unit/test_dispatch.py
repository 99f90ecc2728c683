"""The dispatcher queues a campaign as fast as it is sent, not all at once."""

from smsinvite.dispatch import LEAD_SECONDS, pause_before_next_page


def test_the_first_pages_go_out_at_once():
    assert pause_before_next_page(queued=100, rate_per_second=10, elapsed=0.5) == 0.0


def test_once_the_queue_holds_more_than_the_lead_the_dispatch_waits_for_it_to_drain_to_half():
    # 500 queued at 10 a second is 50 s of sending, 20 s more than the lead of 30
    wait = pause_before_next_page(queued=500, rate_per_second=10, elapsed=0.0)
    assert wait == 50 - LEAD_SECONDS / 2


def test_a_campaign_faster_than_its_dispatch_never_waits():
    assert pause_before_next_page(queued=1000, rate_per_second=100, elapsed=9.0) == 0.0
    assert pause_before_next_page(queued=10, rate_per_second=0, elapsed=0.0) == 0.0
