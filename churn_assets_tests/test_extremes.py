"""What real event data does that simulated data does not: a bot's day, a whale's revenue, a day the app was down."""

from __future__ import annotations

import dagster as dg
import pytest

from churn_assets.resources.model_io_manager import ModelIOManager
from churn_assets.resources.parquet_io_manager import MissingPartitionError
from churn_assets_tests.helpers import failure_text
from churn_assets_tests.landing_helpers import (
    amplitude_row as row,
)
from churn_assets_tests.landing_helpers import (
    jsonl,
    materialize_ingest,
    read_partition,
    write_landing_day,
)

DAY = "2025-01-01"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_a_users_day_of_revenue_too_large_to_sum_exactly_fails_user_daily_naming_the_user(
    local_settings, local_resources, instance
):
    """10,000 purchases of 10^9 each (a load-test user replaying a purchase with a broken price: each event is under
    the per-event limit) summed to -8.4 x 10^12 in whole millionths as int64, and features summed that into 28 days.
    A whale's 150 purchases of 10^8 (more than any real day, under the limit) are kept to the cent."""
    bot = [row(f"b{i}", "bot", f"{DAY} 10:00:00.000000", "purchase", 1, revenue=1e9) for i in range(10_000)]
    whale = [row(f"w{i}", "whale", f"{DAY} 11:00:00.000000", "purchase", 2, revenue=1e8 + 0.01) for i in range(150)]
    write_landing_day(local_settings.landing_url, DAY, {"a.jsonl": jsonl(bot + whale)})

    result = materialize_ingest(local_resources, instance, DAY, raise_on_error=False)

    assert not result.success
    failure = failure_text(result)
    assert (
        f"user_daily[{DAY}]: 1 user(s) with more revenue on {DAY} than 100,000,000,000 for one user in a day"
        in failure
    )
    assert "'bot': 10,000,000,000,000 over 10,000 purchases" in failure and "whale" not in failure
    assert "churn-assets erase --user-id ID" in failure

    # Without the bot, the day goes through and the whale's revenue is exact.
    write_landing_day(local_settings.landing_url, DAY, {"a.jsonl": jsonl(whale)})
    assert materialize_ingest(local_resources, instance, DAY).success
    user_daily = read_partition(local_settings.data_url, "user_daily", DAY)
    assert user_daily.select("user_id", "revenue", "n_purchases").rows() == [("whale", 15_000_000_001.5, 150)]


def test_a_delivered_day_without_events_is_stored_empty_and_warned_of(local_settings, local_resources, instance):
    """A day the app was down (or whose export failed) arrives as empty files: raw_events, install_times and
    user_daily are stored, and the run's log says the day holds no event and what features make of it."""
    write_landing_day(local_settings.landing_url, DAY, {"a.jsonl": jsonl([row("e1", "u1", f"{DAY} 10:00:00.000000")])})
    write_landing_day(local_settings.landing_url, "2025-01-02", {"a.jsonl": b"", "b.jsonl.gz": jsonl([], gz=True)})

    first = materialize_ingest(local_resources, instance, DAY)
    result = materialize_ingest(local_resources, instance, "2025-01-02")

    assert result.success
    assert read_partition(local_settings.data_url, "raw_events", "2025-01-02").height == 0
    assert read_partition(local_settings.data_url, "user_daily", "2025-01-02").height == 0
    assert (
        read_partition(local_settings.data_url, "install_times", "2025-01-02").get_column("user_id").to_list() == ["u1"]
    )
    said = [e.user_message for e in instance.all_logs(result.run_id) if "hold no event" in e.user_message]
    assert said == [
        "2025-01-02: the landing day is complete but its 2 files hold no event: if the app was not down that day, the "
        "export failed; re-deliver the day with its events. Until then features count 2025-01-02 as a day without "
        "activity for every user, and predictions of it and the days after score them as more at risk "
        "(docs/operations.md, 'A day without events')."
    ]
    # A day with events says nothing of the kind.
    assert not [e for e in instance.all_logs(first.run_id) if "hold no event" in e.user_message]


def test_a_month_without_a_model_says_to_materialize_its_training_set_too(tmp_path):
    """A month whose training_set failed (too few labels, one class) has no model: its predictions named only
    model as the thing to materialize, which fails again on the same training set."""
    with pytest.raises(MissingPartitionError) as raised:
        ModelIOManager(base_url=str(tmp_path / "lake")).read("model", "2030-01")
    assert str(raised.value).endswith(
        "materialize training_set,model for 2030-01 first (a month whose training set has too few labels, or one "
        "class, fails and has no model: docs/operations.md, 'Too few labels')"
    )
