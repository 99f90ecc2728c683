"""A sweep's items each stand alone: one that fails is counted and the rest go on, within the tick's time."""

from hypothesis import given, strategies as st

from smsinvite.sweeps import guarded, sweep


class TwilioDown(Exception):
    pass


def plenty_of_time():
    return 60.0


@given(st.lists(st.sampled_from(["ok", "boom", "busy"]), max_size=30))
def test_one_bad_item_fails_alone_and_every_other_item_is_acted_on(kinds):
    # Given items some of which raise, as a corrupt record or an unknown value would
    done = []

    def act(kind):
        if kind == "boom":
            raise ValueError("a value nobody knows: +14155550100")
        done.append(kind)
        return kind

    # When they are swept
    outcomes = sweep("test", kinds, act, time_left=plenty_of_time, margin=1.0)

    # Then each good item was acted on, each bad one counted as failed
    assert done == [k for k in kinds if k != "boom"]
    assert outcomes["failed"] == kinds.count("boom")
    assert sum(outcomes.values()) == len(kinds)


def test_an_exception_that_says_the_service_is_down_postpones_the_rest_to_the_next_tick():
    acted = []

    def act(item):
        if item == 2:
            raise TwilioDown()
        acted.append(item)
        return "done"

    outcomes = sweep("test", [1, 2, 3, 4], act, time_left=plenty_of_time, margin=1.0, stop_on=(TwilioDown,))

    assert acted == [1] and outcomes == {"done": 1, "postponed": 1}


def test_a_sweep_stops_when_the_time_budget_runs_low_and_says_so():
    clock = iter([10.0, 10.0, 0.5, 0.5])
    outcomes = sweep("test", ["a", "b", "c"], lambda item: "done", time_left=lambda: next(clock), margin=1.0)
    assert outcomes == {"done": 2, "left_for_next_tick": 1}


def test_a_sweep_that_cannot_start_leaves_a_plain_error_and_raises_nothing():
    def query_fails():
        raise ConnectionError("DynamoDB at http://127.0.0.1:1 refused")

    assert guarded("test", query_fails) == {"error": "ConnectionError"}
