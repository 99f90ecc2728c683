"""The scheduler's sweeps: many items a tick, each one's trouble its own, all within the tick's time.

`sweep` acts on items one by one until the time budget runs low. An item whose action raises fails
alone: it is counted as `failed`, logged by exception type (never its text, which may hold a number),
and published as a metric; the sweep goes on with the next. An exception listed in `stop_on` (Twilio
not answering, say) ends the sweep for this tick: the rest waits for the next one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from smsinvite.observability import MetricUnit, logger, metrics

T = TypeVar("T")

FAILED = "failed"
LEFT_FOR_NEXT_TICK = "left_for_next_tick"
POSTPONED = "postponed"


def sweep(
    name: str,
    items: Iterable[T],
    act: Callable[[T], str],
    *,
    time_left: Callable[[], float],
    margin: float,
    stop_on: tuple[type[Exception], ...] = (),
) -> Counter:
    """Outcomes of `act` over `items`, counted by the word each returns."""
    outcomes: Counter = Counter()
    for item in items:
        if time_left() < margin:
            outcomes[LEFT_FOR_NEXT_TICK] += 1
            break
        try:
            outcomes[act(item)] += 1
        except stop_on as error:
            logger.warning(f"{name}: postponed to the next tick", extra={"error_type": type(error).__name__})
            outcomes[POSTPONED] += 1
            break
        except Exception as error:  # noqa: BLE001 - one item's trouble must not end the tick
            item_failed(name, error)
            outcomes[FAILED] += 1
    return outcomes


def item_failed(name: str, error: Exception) -> None:
    logger.error(f"{name}: an item failed; the rest go on", extra={"error_type": type(error).__name__})
    metrics.add_metric(name=f"SweepItemFailed_{name}", unit=MetricUnit.Count, value=1)


def guarded(name: str, run: Callable[[], T]) -> T | dict:
    """A whole sweep of the tick: if it cannot even start (its query fails), the other sweeps still run."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001
        logger.error(f"{name}: the sweep failed; the rest of the tick goes on", extra={"error_type": type(error).__name__})
        metrics.add_metric(name=f"SweepFailed_{name}", unit=MetricUnit.Count, value=1)
        return {"error": type(error).__name__}
