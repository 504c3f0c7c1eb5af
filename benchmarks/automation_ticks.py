"""How long one evaluation of each schedule and sensor takes on the instance and landing zone of the environment.

    DAGSTER_HOME=... CHURN_LANDING_URL=... CHURN_START_DATE=... python -m benchmarks.automation_ticks --day 2026-11-29

``--day`` is the last day refreshed (the tick's "yesterday"): ``daily_refresh`` ticks the day after it at 02:00,
``weekly_scoring`` the Monday after the last Sunday up to it, ``monthly_retraining`` the 1st of its month. The
landing sensor is evaluated with no cursor (its first tick over the whole history), then ``--repeat`` times from
the cursor that tick stored after a tick in the same hour (a tick that finds nothing new: the median), then once
as the first tick of an hour, which lists every landing file. Prints
one line per evaluation: wall time, the requests or the skip reason (cut), and the cursor's size.
"""

import argparse
import datetime as dt
import statistics
import time

import dagster as dg

from churn_assets.automation.sensors.drift_retraining_sensor import drift_retraining_sensor
from churn_assets.automation.sensors.landing_sensor import landing_sensor
from churn_assets.config import SETTINGS
from churn_assets.definitions import defs
from churn_assets.resources import AlertWebhook, LandingZone


def _timed(evaluate) -> tuple[float, object]:
    start = time.perf_counter()
    data = evaluate()
    return time.perf_counter() - start, data


def _line(name: str, seconds: float, data) -> str:
    requests = [r.partition_key or r.run_key for r in data.run_requests or []]
    what = f"{len(requests)} request(s) {requests[:2]}{'...' if len(requests) > 2 else ''}" if requests else (
        f"skip: {(data.skip_message or '')[:90]}"
    )
    cursor = f", cursor {len(data.cursor):,} B" if getattr(data, "cursor", None) else ""
    return f"{name:<34} {seconds * 1000:8.1f} ms  {what}{cursor}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--day", type=dt.date.fromisoformat, required=True, help="the last day refreshed")
    parser.add_argument("--repeat", type=int, default=5, help="steady-state landing sensor ticks (default 5)")
    args = parser.parse_args()
    repository = defs.get_repository_def()
    with dg.DagsterInstance.get() as instance:
        resources = {"landing": LandingZone(url=SETTINGS.landing_url), "alerts": AlertWebhook(url=None)}

        def sensor_tick(sensor, cursor, last_tick=None):
            """A tick as the daemon evaluates it: after one at ``last_tick`` (None: the first, or a preview)."""
            context = dg.SensorEvaluationContext(
                instance_ref=None, instance=instance, resources=resources, cursor=cursor, repository_def=repository,
                last_tick_completion_time=last_tick.timestamp() if last_tick else None,
            )
            return sensor.evaluate_tick(context)

        seconds, first = _timed(lambda: sensor_tick(landing_sensor, None))
        print(_line("landing_sensor, first tick", seconds, first))
        hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        times = []
        for _ in range(args.repeat):  # after a tick in the same hour
            seconds, data = _timed(lambda: sensor_tick(landing_sensor, first.cursor, hour))
            times.append(seconds)
        print(_line(f"landing_sensor, median of {args.repeat}", statistics.median(times), data))
        seconds, data = _timed(lambda: sensor_tick(landing_sensor, first.cursor, hour - dt.timedelta(minutes=1)))
        print(_line("landing_sensor, first of an hour", seconds, data))
        seconds, data = _timed(lambda: sensor_tick(drift_retraining_sensor, None))
        print(_line("drift_retraining_sensor, first tick", seconds, data))
        seconds, again = _timed(lambda: sensor_tick(drift_retraining_sensor, data.cursor))
        print(_line("drift_retraining_sensor, next tick", seconds, again))

        next_day = args.day + dt.timedelta(days=1)
        sunday = args.day - dt.timedelta(days=(args.day.weekday() + 1) % 7)
        ticks = {
            "daily_refresh": dt.datetime.combine(next_day, dt.time(2), dt.UTC),
            "weekly_scoring": dt.datetime.combine(sunday + dt.timedelta(days=1), dt.time(3), dt.UTC),
            "monthly_retraining": dt.datetime.combine(next_day.replace(day=1), dt.time(4), dt.UTC),
        }
        for name, tick in ticks.items():
            schedule = repository.get_schedule_def(name)
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, repository_def=repository
            ) as context:
                seconds, data = _timed(lambda: schedule.evaluate_tick(context))  # noqa: B023
            print(_line(f"{name} at {tick:%Y-%m-%d %H:%M}", seconds, data))


if __name__ == "__main__":
    main()
