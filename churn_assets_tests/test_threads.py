"""The two helpers range runs use to keep both cores busy: results stay in order, the work held stays
bounded, and a failure surfaces at the item it belongs to."""

import threading
import time

import pytest

from churn_assets.threads import Prefetched, ordered_map, workers_for


def test_ordered_map_keeps_order_and_reads_a_bounded_number_of_items_ahead():
    pulled: list[int] = []
    yielded: list[int] = []
    running = set()
    most_at_once = 0
    lock = threading.Lock()

    def items():
        for i in range(12):
            pulled.append(i)
            # Never more than workers + 1 items taken beyond what the caller has received, this one included.
            assert len(pulled) - len(yielded) <= 3
            yield i

    def slow_square(i: int) -> int:
        nonlocal most_at_once
        with lock:
            running.add(i)
            most_at_once = max(most_at_once, len(running))
        time.sleep(0.02 if i % 3 == 0 else 0.001)  # later items often finish first
        with lock:
            running.discard(i)
        return i * i

    for result in ordered_map(slow_square, items(), workers=2):
        yielded.append(result)
    assert yielded == [i * i for i in range(12)]
    assert most_at_once == 2


def test_ordered_map_hands_on_a_passing_item_before_reading_past_it():
    yielded: list = []

    def items():
        # A day's pieces, then its end marker; the next day's first piece can only be read once the
        # marker has reached the caller (as a landing file that appears only after the previous day landed).
        yield from (1, 2, 3, "end of day 1")
        assert "end of day 1" in yielded, "the next day was read before the previous one was handed on"
        yield from (4, "end of day 2")

    for result in ordered_map(lambda i: i * 10, items(), workers=2, passes=lambda i: isinstance(i, str)):
        yielded.append(result)
    assert yielded == [10, 20, 30, "end of day 1", 40, "end of day 2"]


def test_ordered_map_raises_a_failure_after_the_results_before_it():
    def fails_on_five(i: int) -> int:
        if i == 5:
            raise ValueError("day 5 is broken")
        return i

    got = []
    with pytest.raises(ValueError, match="day 5 is broken"):
        for result in ordered_map(fails_on_five, range(10), workers=2):
            got.append(result)
    assert got == [0, 1, 2, 3, 4]



@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_hands_on_the_items_made_before_its_items_failed(workers):
    """A range whose day 4 has a corrupt landing file: the stream raises as soon as the day after day 3 is asked
    for, while day 3 is still being written. Day 3 was dropped (a write not yet started was canceled), so the run
    recorded it failed and left its previous file, though it comes before the corrupt day."""
    def days():
        yield from range(4)
        raise ValueError("day 4 is broken")

    def slow(i: int) -> int:
        time.sleep(0.05)
        return i

    got = []
    with pytest.raises(ValueError, match="day 4 is broken"):
        for result in ordered_map(slow, days(), workers=workers):
            got.append(result)
    assert got == [0, 1, 2, 3]

def test_prefetched_yields_everything_then_stops_and_reraises_the_producers_error():
    with Prefetched(iter(range(5)), ahead=2) as items:
        assert list(items) == [0, 1, 2, 3, 4]
        assert list(items) == []

    def broken():
        yield 1
        raise OSError("landing file vanished")

    with Prefetched(broken(), ahead=2) as items:
        assert next(items) == 1
        with pytest.raises(OSError, match="vanished"):
            next(items)


def test_big_partitions_are_computed_one_at_a_time():
    assert workers_for(50_000) == 2
    assert workers_for(5_000_000) == 1
