"""Model quality and speed: ``python -m benchmarks.train_quality [--users 20000] [--days 120] [--reuse]``.

Simulates the landing zone (seeded), runs the data chain and ``training_set`` for the month after the
simulated days through the code location's own assets, then measures — each in a fresh process, so peak
memory is the step's own:

* ``model`` of that month: wall time and peak RSS of the run, holdout ROC-AUC and PR-AUC overall and for
  users active in the last 7 days, next to the logistic baseline (from the model card) and an oracle
  computed from the simulator's truth on the same holdout rows;
* scoring: ``predict_day`` (probabilities, bands, ranks, top-3 reasons) on 1,000,000 users;
* ``measure_drift`` (Evidently report and summary) on a 100,000-user day.

The oracle knows from the simulator whether a user had already left for good by the end of the snapshot
day (``churn_date`` ≤ S + 1: no activity after S) and ranks everyone else by latent engagement: a ceiling
no model of the snapshot's features can reach, shown to place the model between baseline and ceiling.

Data lives under ``benchmarks/.data/train_quality/`` (git-ignored); ``--reuse`` keeps a lake whose
simulation arguments are unchanged and skips the data chain.
"""

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

from benchmarks.scales import START

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / ".data" / "train_quality"
SEED = 7
TARGETS = {"train_s": 60.0, "score_users_per_10s": 1_000_000, "drift_100k_s": 30.0}


def model_month(last_day: dt.date) -> str:
    """The latest month whose training labels are all simulated: the next one when the days end a month."""
    return (
        (last_day + dt.timedelta(days=1)).strftime("%Y-%m")
        if (last_day + dt.timedelta(days=1)).day == 1
        else last_day.strftime("%Y-%m")
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- steps, each run in its own process -------------------------------------------------------------
def _graph():
    import dagster as dg

    from churn_assets.assets import features, ingest, ml, monitoring
    from churn_assets.config import SETTINGS
    from churn_assets.resources import build_resources

    domains = (ingest, features, ml, monitoring)
    assets = [a for d in domains for a in d.assets] + [c for d in domains for c in d.asset_checks]
    home = DATA / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    return dg, assets, build_resources(SETTINGS), instance


def step_chain(first: str, last: str) -> dict:
    dg, assets, resources, instance = _graph()
    started = time.perf_counter()
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets("raw_events", "install_times", "user_daily", "features", "labels"),
        resources=resources,
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    return {"ok": result.success, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def step_partition(selection: str, key: str) -> dict:
    dg, assets, resources, instance = _graph()
    started = time.perf_counter()
    result = dg.materialize(
        assets, selection=dg.AssetSelection.assets(*selection.split(",")), resources=resources, instance=instance,
        partition_key=key
    )
    return {"ok": result.success, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def _replicated_features(day: str, users: int):
    import polars as pl

    from churn_assets.config import SETTINGS
    from churn_assets.resources.lake import Lake

    lake = Lake(SETTINGS.data_url)
    day_frame = pl.read_parquet(lake.read_bytes(lake.table_url("features", "date", day)))
    copies = -(-users // day_frame.height)
    frame = pl.concat(
        [
            day_frame.with_columns(pl.format("{}-{}", pl.col("user_id"), pl.lit(i)).alias("user_id"))
            for i in range(copies)
        ]
    )
    return frame.head(users).rechunk(), day_frame.height


def _model(month: str):
    from churn_assets.config import SETTINGS
    from churn_assets.resources.model_io_manager import ModelIOManager

    return ModelIOManager(base_url=SETTINGS.data_url).read("model", month)


def step_score(day: str, month: str, users: int) -> dict:
    from churn_assets.assets.ml.predictions import predict_day

    frame, day_users = _replicated_features(day, users)
    churn_model = _model(month)
    predict_day(churn_model, frame.head(1000))  # warm-up: imports, thread pools
    started = time.perf_counter()
    out = predict_day(churn_model, frame)
    wall = time.perf_counter() - started
    return {"users": out.height, "day_users": day_users, "wall_s": wall, "peak_rss_mb": peak_rss_mb()}


def step_drift(day: str, month: str, users: int) -> dict:
    from churn_assets.assets.monitoring.drift_report import measure_drift

    frame, day_users = _replicated_features(day, users)
    churn_model = _model(month)
    started = time.perf_counter()
    table, summary, html = measure_drift(frame, churn_model)
    wall = time.perf_counter() - started
    return {
        "users": frame.height,
        "wall_s": wall,
        "html_mb": len(html) / 1e6,
        "share_of_drifted_columns": summary["share_of_drifted_columns"],
        "peak_rss_mb": peak_rss_mb(),
    }


STEPS = {"chain": step_chain, "partition": step_partition, "score": step_score, "drift": step_drift}


def run_step(env: dict[str, str], name: str, *args: object) -> dict:
    """Runs one step in a fresh interpreter; returns the JSON it prints last."""
    command = [sys.executable, "-m", "benchmarks.train_quality", "--step", name, *map(str, args)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"step {name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- quality figures --------------------------------------------------------------------------------
def quality(data_url: str, landing_url: str, month: str) -> dict:
    import numpy as np
    import polars as pl

    from churn_assets.assets.ml.metrics import classification_metrics, recently_active
    from churn_assets.resources.lake import Lake
    from churn_assets.resources.model_io_manager import ModelIOManager

    card = ModelIOManager(base_url=data_url).read("model", month).card
    lake = Lake(data_url)
    rows = pl.read_parquet(lake.read_bytes(lake.table_url("training_set", "month", month)))
    start, end = (dt.date.fromisoformat(d) for d in card["training_window"]["holdout"])
    holdout = rows.filter(pl.col("snapshot_date").is_between(start, end))
    truth = pl.read_parquet(Path(landing_url) / "truth" / "users.parquet").select("user_id", "churn_date", "engagement")
    joined = holdout.join(truth, on="user_id", how="left")
    gone = joined.get_column("churn_date").is_not_null() & (
        joined.get_column("churn_date") <= joined.get_column("snapshot_date") + dt.timedelta(days=1)
    )
    oracle = gone.cast(pl.Float64).to_numpy() + 0.5 * (1.0 - joined.get_column("engagement").fill_null(0.5).to_numpy())
    labels = joined.get_column("churned").to_numpy()
    recent = recently_active(joined)
    oracle_eval = {
        "all": classification_metrics(labels, oracle, 1.0),
        "active_7d": classification_metrics(labels[recent], oracle[recent], 1.0),
    }
    metrics = (
        card["selection"]["challenger"] if card["selection"]["decision"] == "promoted" else card["metrics"]["holdout"]
    )
    return {
        "model": metrics,
        "baseline": card["selection"]["baseline"],
        "oracle": oracle_eval,
        "holdout_rows": holdout.height,
        "holdout_window": f"{start}..{end}",
        "training_rows": card["training_window"]["rows"],
        "rounds": card["xgboost"]["rounds"],
        "threshold": card["threshold"],
        "churn_rate": float(np.mean(labels)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--score-users", type=int, default=1_000_000)
    parser.add_argument("--drift-users", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="keep the lake when the simulation is unchanged")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Dagster flags beta/preview parameters (backfill policies, partitioned checks) on every import.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*", category=Warning)
    if args.step:
        name, *rest = args.step
        print(json.dumps(STEPS[name](*[int(a) if a.isdigit() else a for a in rest])))
        return

    from churn_assets.simulate import simulate

    last_day = START + dt.timedelta(days=args.days - 1)
    month = model_month(last_day)
    landing, lake = DATA / "landing", DATA / "lake"
    signature = {"users": args.users, "days": args.days, "seed": SEED, "start": START.isoformat()}
    marker = DATA / "simulation.json"
    reuse = args.reuse and marker.exists() and json.loads(marker.read_text()) == signature
    env = {
        **os.environ, "CHURN_DATA_URL": str(lake), "CHURN_LANDING_URL": str(landing),
        "CHURN_START_DATE": START.isoformat(),
    }
    print(f"train_quality: {args.users:,} users × {args.days} days from {START}; model of {month}; data in {DATA}")

    if not reuse:
        shutil.rmtree(DATA, ignore_errors=True)
        DATA.mkdir(parents=True)
        started = time.perf_counter()
        simulate(str(landing), users=args.users, days=args.days, start=START, seed=SEED, file_format="parquet")
        print(f"  simulate          {time.perf_counter() - started:7.1f} s")
        chain = run_step(env, "chain", START.isoformat(), last_day.isoformat())
        print(f"  data chain        {chain['wall_s']:7.1f} s   peak {chain['peak_rss_mb']:,.0f} MB")
        marker.write_text(json.dumps(signature))
    training_set = run_step(env, "partition", "training_set", month)
    print(f"  training_set      {training_set['wall_s']:7.1f} s   peak {training_set['peak_rss_mb']:,.0f} MB")
    trained = run_step(env, "partition", "model", month)
    print(
        f"  model (one run)   {trained['wall_s']:7.1f} s   peak {trained['peak_rss_mb']:,.0f} MB   "
        f"target < {TARGETS['train_s']:.0f} s"
    )

    figures = quality(str(lake), str(landing), month)
    print(
        f"\nholdout {figures['holdout_window']}: {figures['holdout_rows']:,} rows, "
        f"churn rate {figures['churn_rate']:.3f}; "
        f"trained on {figures['training_rows']['train']:,} rows, {figures['rounds']} rounds, "
        f"threshold {figures['threshold']:.3f}"
    )
    print(
        f"  {'scorer':<20} {'ROC-AUC':>8} {'PR-AUC':>8} {'ROC-AUC 7d':>11} {'PR-AUC 7d':>10}"
        "  (7d: users active in the last 7 days)"
    )
    for name, key in (("XGBoost (model)", "model"), ("logistic baseline", "baseline"), ("oracle (truth)", "oracle")):
        every, recent = figures[key]["all"], figures[key]["active_7d"]
        print(
            f"  {name:<20} {every['roc_auc']:8.4f} {every['pr_auc']:8.4f} "
            f"{recent['roc_auc']:11.4f} {recent['pr_auc']:10.4f}"
        )

    last = last_day.isoformat()
    # Scoring and drift time the functions behind predictions and drift_report with the model just
    # trained, on the last simulated day's features replicated to the wanted number of users.
    scored = run_step(env, "score", last, month, args.score_users)
    rate = scored["users"] / scored["wall_s"] * 10
    print(
        f"\nscoring {scored['users']:,} users (features of {last} ×{-(-scored['users'] // scored['day_users'])}): "
        f"{scored['wall_s']:.1f} s = {rate:,.0f} users per 10 s   peak {scored['peak_rss_mb']:,.0f} MB   "
        f"target ≥ {TARGETS['score_users_per_10s']:,}"
    )
    drift = run_step(env, "drift", last, month, args.drift_users)
    print(
        f"drift report of {drift['users']:,} users: {drift['wall_s']:.1f} s (HTML {drift['html_mb']:.1f} MB, "
        f"{drift['share_of_drifted_columns']:.0%} columns drifted)   peak {drift['peak_rss_mb']:,.0f} MB   "
        f"target < {TARGETS['drift_100k_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
