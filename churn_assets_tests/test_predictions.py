"""Daily predictions: every user scored by the model of the day's month, ranked, banded and explained."""

import datetime as dt
import html
import json
import pickle
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from churn_assets.assets.ml.checks import predictions_cover_every_user
from churn_assets.assets.ml.predictions import PREDICTIONS_SCHEMA, predict_day, predictions
from churn_assets.assets.ml.scoring import (
    LAPSED_ACTION,
    RECOMMENDED_ACTIONS,
    RISK_BANDS,
    _top_positive,
    model_specs,
    risk_bands,
    score,
)
from churn_assets.assets.ml.training import to_dmatrix
from churn_assets.assets.monitoring.drift_report import drift_report
from churn_assets.resources.lake import Lake
from churn_assets.resources.model_io_manager import MODEL_FILE, ModelIOManager, card_bytes, sha256
from churn_assets_tests.ml_frames import (
    MARCH,
    PLANTED,
    features_stub,
    lake_with_models,
    planted_signal,
    stored_model,
    synthetic_features,
    synthetic_training_set,
)

DAY = dt.date(2025, 3, 10)


@pytest.fixture
def lake(local_settings, models_lake) -> str:
    shutil.copytree(models_lake, local_settings.data_url)
    return local_settings.data_url


def score_day(resources, instance, frames, **partition) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [features_stub(frames), stored_model(), predictions, predictions_cover_every_user],
        resources=resources,
        instance=instance,
        **partition,
    )


def stored(lake_url: str, day: dt.date) -> pl.DataFrame:
    lake = Lake(lake_url)
    return pl.read_parquet(lake.read_bytes(lake.table_url("predictions", "date", day.isoformat())))


def test_every_user_is_scored_ranked_banded_and_explained(lake, local_resources, instance):
    features = synthetic_features(DAY, users=700)
    result = score_day(local_resources, instance, {DAY.isoformat(): features}, partition_key=DAY.isoformat())
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    churn_model = ModelIOManager(base_url=lake).read("model", MARCH)
    out = stored(lake, DAY)

    assert out.schema == pl.Schema(PREDICTIONS_SCHEMA)
    assert out.height == features.height
    assert sorted(out.get_column("user_id").to_list()) == sorted(features.get_column("user_id").to_list())
    # Probabilities are the model's own scores of each user's features.
    expected = dict(zip(features.get_column("user_id").to_list(), score(churn_model, features), strict=True))
    got = dict(zip(out.get_column("user_id").to_list(), out.get_column("churn_probability").to_list(), strict=True))
    assert all(abs(got[u] - expected[u]) < 1e-6 for u in expected)
    # Rank 1 is the highest risk; rows are in rank order, ties broken by user id.
    assert out.get_column("rank").to_list() == list(range(1, out.height + 1))
    assert out.equals(out.sort(["churn_probability", "user_id"], descending=[True, False]))
    # Bands follow the card's cut-offs; actions follow bands, but for High and Critical users silent for 7 days or
    # more (not for the success team's outreach: a win-back campaign); the version is the model's.
    cut = churn_model.card["risk_bands"]
    silent = dict(features.select("user_id", "days_since_last_active").iter_rows())
    actions = []
    for row in out.iter_rows(named=True):
        p = row["churn_probability"]
        band = (
            "Critical" if p >= cut["Critical"]
            else "High" if p >= cut["High"]
            else "Medium" if p >= cut["Medium"]
            else "Low"
        )
        assert row["risk_band"] == band
        lapsed = band in ("High", "Critical") and silent[row["user_id"]] >= 7
        assert row["recommended_action"] == (LAPSED_ACTION if lapsed else RECOMMENDED_ACTIONS[band])
        actions.append((band, lapsed))
    # The day has a Critical user silent for 7 days or more and a High one active in them: both rules were tested.
    assert {("Critical", True), ("High", False)} <= set(actions), set(actions)
    assert set(out.get_column("risk_band")) >= {"Low", "High", "Critical"}
    assert set(out.get_column("model_version")) == {churn_model.version}
    # The UI shows the ten highest-risk users of the day, in rank order.
    (materialization,) = result.asset_materializations_for_node("predictions")
    preview = materialization.metadata["highest_risk"].value.splitlines()
    assert preview[0].startswith("| rank | user_id | churn_probability | risk_band | top_reason_1")
    assert len(preview) == 2 + 10
    assert [line.split(" | ")[1].strip("`") for line in preview[2:]] == out.get_column("user_id").head(10).to_list()
    # The band counts the UI shows are the day's: every band of the card, summing to the users scored.
    metadata = materialization.metadata
    counts = {band: metadata[f"band/{band}"].value for band in RISK_BANDS}
    assert counts == {band: out.filter(pl.col("risk_band") == band).height for band in RISK_BANDS}
    assert sum(counts.values()) == out.height == metadata["users"].value
    # The share flagged is the share at or above the card's threshold: the High and Critical bands.
    assert metadata["flagged_share"].value == (counts["High"] + counts["Critical"]) / out.height
    assert metadata["mean_churn_probability"].value == pytest.approx(out.get_column("churn_probability").mean())
    assert metadata["horizon_days"].value == churn_model.card["label"]["horizon_days"] == 14

    # Reasons name real features: for each user, the features with the largest positive contributions.
    names = [s.name for s in model_specs(churn_model)]
    reasons = out.select("top_reason_1", "top_reason_2", "top_reason_3")
    assert set(reasons.unpivot().get_column("value").drop_nulls()) <= set(names)
    assert reasons.get_column("top_reason_1").null_count() < out.height * 0.05
    by_user = features.sort("user_id")
    contributions = churn_model.booster.predict(
        to_dmatrix(by_user, model_specs(churn_model)), pred_contribs=True, approx_contribs=True
    )[:, :-1]
    explained = out.sort("user_id")
    for i in range(0, by_user.height, 37):
        row = contributions[i]
        top = [names[j] for j in np.argsort(-row, kind="stable")[:3] if row[j] > 0]
        row_out = explained.row(i, named=True)
        given = [row_out[f"top_reason_{k}"] for k in (1, 2, 3) if row_out[f"top_reason_{k}"] is not None]
        assert given == top

    # The check fails on predictions tampered with: the user ranked 3rd dropped (a gap in the ranks), the one
    # ranked 2nd given rank 1 as well, the 4th a probability above 1, the 5th no band.
    lake_store = Lake(lake)
    rank = pl.col("rank")
    tampered = out.filter(rank != 3).with_columns(
        pl.when(rank == 2).then(pl.lit(1, out.schema["rank"])).otherwise(rank).alias("rank"),
        pl.when(rank == 4).then(1.5).otherwise(pl.col("churn_probability")).alias("churn_probability"),
        pl.when(rank == 5).then(None).otherwise(pl.col("risk_band")).alias("risk_band"),
    )
    lake_store.write_table(lake_store.table_url("predictions", "date", DAY.isoformat()), tampered)
    checked = dg.materialize(
        [features_stub({}), stored_model(), predictions, predictions_cover_every_user], resources=local_resources,
        instance=instance, selection=dg.AssetSelection.checks(predictions_cover_every_user),
        tags={"dagster/partition": DAY.isoformat()}, raise_on_error=False,
    )
    [evaluation] = checked.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.partition == DAY.isoformat()
    counts = {k: v.value for k, v in evaluation.metadata.items()}
    assert counts == {
        "duplicate_users": 0, "probabilities_out_of_range": 1, "users_without_band": 1,
        "rows_with_rank_gaps": out.height - 1, "duplicate_ranks": 1, "users_not_scored": 1,
        "users_not_in_features": 0, "rows": out.height - 1,
    }



def test_a_planted_signal_is_learnt_ranked_first_and_given_as_a_reason_only_where_it_raises_the_risk(
    tmp_path, local_settings, local_resources, instance
):
    """Churn drawn from one feature alone (``planted_signal``: few pushes opened, high risk), every other
    feature noise: the model ranks it first, beats the base rate on its out-of-time holdout, and each user's
    reasons are their own. A user who opened few pushes gets it as the first reason; one who opened many (a
    value that lowers the risk) never gets it as a reason, as a global importance or a contribution's size
    without its sign would give it."""
    lake_with_models(tmp_path, {MARCH: planted_signal(synthetic_training_set(MARCH, seed=31))})
    card = ModelIOManager(base_url=local_settings.data_url).read("model", MARCH).card
    assert next(iter(card["feature_importance"])) == PLANTED
    holdout = card["metrics"]["holdout"]["all"]
    assert holdout["pr_auc"] > holdout["churn_rate"] + 0.25 and holdout["roc_auc"] > 0.8

    features = planted_signal(synthetic_features(DAY, users=1000, seed=7))
    assert score_day(local_resources, instance, {DAY.isoformat(): features}, partition_key=DAY.isoformat()).success
    out = stored(local_settings.data_url, DAY).join(features.select("user_id", PLANTED), on="user_id")
    reasons = pl.concat_list("top_reason_1", "top_reason_2", "top_reason_3")
    few, many = out.filter(pl.col(PLANTED) <= 1), out.filter(pl.col(PLANTED) >= 7)
    assert few.height > 50 and many.height > 50
    assert (few.get_column("top_reason_1") == PLANTED).mean() > 0.9
    assert not many.select(reasons.list.contains(PLANTED).any()).item()
    assert few.get_column("churn_probability").mean() > 3 * many.get_column("churn_probability").mean()


def test_user_ids_are_shown_as_text_in_the_preview(lake, local_resources, instance):
    """User ids are what the app's users send. In the UI's preview of the highest-risk users, an id with a line
    break or a "|" broke the table, and one holding Markdown loaded an image from another site in the browser
    of whoever opened the run, or showed a link: the preview shows each id as the text it is."""
    from markdown_it import MarkdownIt

    hostile = (
        "{} | ![x](https://evil.example/pixel.png)\n| [sign in](https://evil.example) <https://evil.example> `*b*`"
    )
    features = synthetic_features(DAY, users=300).with_columns(
        pl.format(hostile, pl.col("user_id")).alias("user_id")
    )
    result = score_day(local_resources, instance, {DAY.isoformat(): features}, partition_key=DAY.isoformat())
    assert result.success
    (materialization,) = result.asset_materializations_for_node("predictions")
    page = MarkdownIt("commonmark").enable("table").render(materialization.metadata["highest_risk"].value)

    assert "<img" not in page and "<a " not in page
    body = page.split("<tbody>")[1]
    assert body.count("<tr>") == 10
    assert all(row.count("<td>") == 7 for row in body.split("<tr>")[1:])
    assert (
        "<code>" + html.escape(stored(lake, DAY).get_column("user_id")[0].replace("\n", " ")[:100], quote=False)
        in page
    )


def test_a_probability_at_a_cut_off_is_in_the_band_that_cut_off_starts(lake):
    """Cut-offs from the model card are lower bounds: a probability equal to one is in the higher band, the
    float just below it in the band under it."""
    cut = {"Low": 0.0, "Medium": 0.2, "High": 0.5, "Critical": 0.8}
    at = np.array([cut[band] for band in RISK_BANDS])
    below = np.nextafter(at[1:], 0.0)
    assert risk_bands(at, cut).to_list() == ["Low", "Medium", "High", "Critical"]
    assert risk_bands(below, cut).to_list() == ["Low", "Medium", "High"]
    assert risk_bands(np.array([1.0]), cut).to_list() == ["Critical"]
    # The same with the cut-offs a trained model's card holds (two of them may coincide: the highest band
    # whose lower bound the probability reaches).
    card = ModelIOManager(base_url=lake).read("model", MARCH).card["risk_bands"]
    at = np.array([card[band] for band in RISK_BANDS])
    reached = [max((b for b in RISK_BANDS if p >= card[b]), key=RISK_BANDS.index) for p in at.tolist()]
    assert risk_bands(at, card).to_list() == reached
    assert all(RISK_BANDS.index(band) >= i for i, band in enumerate(reached))  # its band, or one above


def test_users_with_the_same_probability_are_ranked_by_user_id(lake):
    """Users with the same features get the same probability: their ranks follow user_id (ascending), so a
    day's ranking is the same every time, whatever order features[D] holds them in."""
    features = synthetic_features(DAY, users=50)
    twin = features.filter(pl.col("user_id") == features.get_column("user_id")[0])
    twins = pl.concat([twin.with_columns(pl.lit(name).alias("user_id")) for name in ("t-b", "t-c", "t-a")])
    churn_model = ModelIOManager(base_url=lake).read("model", MARCH)
    for frame in (pl.concat([features, twins]), pl.concat([twins.reverse(), features])):
        out = predict_day(churn_model, frame)
        tied = out.filter(pl.col("user_id").str.starts_with("t-"))
        assert tied.get_column("churn_probability").n_unique() == 1
        ranks = tied.get_column("rank").to_list()
        assert tied.get_column("user_id").to_list() == ["t-a", "t-b", "t-c"]
        assert ranks == list(range(ranks[0], ranks[0] + 3))


def test_top_reasons_break_ties_by_the_lower_feature_index():
    # Four features tied at the 3rd place (and beyond it), negative and zero contributions, a row with
    # fewer than three features pushing up, and rows of many columns with ties everywhere.
    rows = np.array(
        [
            [0.1, 0.2, 0.3, 0.1, 0.1, 0.3, 0.3, 0.3, 0.1, 0.2, 0.3, 0.2],
            [0.2, 0.5, 0.2, 0.0, 0.2, 0.5, 0.2, -0.1, 0.2, 0.0, 0.2, 0.2],
            [-0.3, 0.0, 0.4, 0.0, -0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    assert _top_positive(rows, 3).tolist() == [[2, 5, 6], [1, 5, 0], [2, -1, -1]]
    many = np.round(np.random.default_rng(4).normal(size=(300, 200)), 1).astype(np.float32)
    expected = [[j if row[j] > 0 else -1 for j in np.argsort(-row, kind="stable")[:3]] for row in many]
    assert _top_positive(many, 3).tolist() == expected
    assert _top_positive(rows[:, :2], 3).tolist() == [[1, 0, -1], [1, 0, -1], [-1, -1, -1]]
    # A NaN contribution ranks last; it made fewer than three columns chosen, and the reshape failed.
    with_nan = np.array([[0.1, np.nan, 0.4, 0.2, 0.3]], dtype=np.float32)
    assert _top_positive(with_nan, 3).tolist() == [[2, 4, 3]]


def test_predictions_are_reproducible(lake, local_resources, instance):
    frames = {DAY.isoformat(): synthetic_features(DAY, users=400, seed=5)}
    lake_store = Lake(lake)
    url = lake_store.table_url("predictions", "date", DAY.isoformat())
    assert score_day(local_resources, instance, frames, partition_key=DAY.isoformat()).success
    first = lake_store.read_bytes(url)
    assert score_day(local_resources, instance, frames, partition_key=DAY.isoformat()).success
    assert lake_store.read_bytes(url) == first


def test_a_range_across_months_scores_each_day_with_its_months_model(lake, local_resources, instance):
    days = [dt.date(2025, 3, 30), dt.date(2025, 3, 31), dt.date(2025, 4, 1)]
    frames = {d.isoformat(): synthetic_features(d, users=300, seed=i) for i, d in enumerate(days)}
    result = score_day(
        local_resources,
        instance,
        frames,
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
    )
    assert result.success
    manager = ModelIOManager(base_url=lake)
    for d in days:
        out = stored(lake, d)
        assert out.height == 300
        assert set(out.get_column("model_version")) == {manager.read("model", d.strftime("%Y-%m")).version}


def test_a_tampered_model_stops_scoring(lake, local_resources, instance):
    folder = Lake(lake).partition_url("model", "month", MARCH)
    Lake(lake).write_bytes(f"{folder}/{MODEL_FILE}", pickle.dumps(object))
    with pytest.raises(Exception, match="pickle"):
        score_day(local_resources, instance, {DAY.isoformat(): synthetic_features(DAY)}, partition_key=DAY.isoformat())
    assert not Lake(lake).exists(Lake(lake).table_url("predictions", "date", DAY.isoformat()))


@pytest.mark.parametrize("scorer", [predictions, drift_report], ids=["predictions", "drift_report"])
def test_features_lacking_a_model_feature_fail_naming_the_day_the_model_and_what_to_do(
    lake, local_resources, instance, scorer
):
    """CHURN_EVENT_TYPES no longer counts ``share``: features[D] lacks n_share_7d/n_share_28d, which
    model[month of D] needs. Each asset that reads both fails as a Failure naming the day, the model and the
    way out (not retried), not a bare ValueError about "the frame", and stores nothing for the day."""
    name = scorer.key.to_user_string()
    features = synthetic_features(DAY, users=300).drop("n_share_7d", "n_share_28d")
    result = dg.materialize(
        [features_stub({DAY.isoformat(): features}), stored_model(), scorer],
        resources=local_resources,
        instance=instance,
        partition_key=DAY.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == name
    message = failure.step_failure_data.error.message
    assert f"{name}[{DAY}]: features[{DAY}] lacks columns ['n_share_7d', 'n_share_28d']" in message
    assert f"model[{MARCH}]" in message and "CHURN_EVENT_TYPES" in message
    # Both causes (the event types, the feature catalog) and both ways out.
    assert "other event types (CHURN_EVENT_TYPES) or another feature catalog" in message
    assert f"Materialize features[{DAY}] again with the model's" in message
    assert f"or train model[{MARCH}] on the current features (training_set,model for {MARCH})" in message
    assert failure.step_failure_data.user_failure_data is not None  # a dg.Failure: not retried
    assert not Lake(lake).exists(Lake(lake).partition_url(name, "date", DAY.isoformat()))


@pytest.mark.parametrize("scorer", [predictions, drift_report], ids=["predictions", "drift_report"])
def test_a_day_of_a_month_that_can_have_no_model_says_when_models_begin(lake, local_resources, instance, scorer):
    """model[2025-01] cannot exist (its lookback lies before CHURN_START_DATE): the failure does not ask to
    materialize it, but says why and names the first month with a model."""
    day = dt.date(2025, 1, 20)
    result = dg.materialize(
        [features_stub({day.isoformat(): synthetic_features(day, users=300)}), stored_model(), scorer],
        resources=local_resources, instance=instance, partition_key=day.isoformat(), raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    text = f"{error.message} {error.cause.message if error.cause else ''}"
    assert "model has no stored partition 2025-01" in text
    assert "materialize model for 2025-01 first" not in text
    assert "model[2025-01] cannot be trained" in text and "the first month with a model is 2025-03" in text


def test_each_day_says_the_horizon_of_the_model_that_scored_it(lake, local_resources, instance):
    """A probability is of no activity in the model's label horizon: predictions[D] says that horizon (the
    one model[month of D] was trained for, here 7 days), not CHURN_HORIZON_DAYS' current 14."""
    manager = ModelIOManager(base_url=lake)
    churn_model = manager.read("model", MARCH)
    card = {**churn_model.card, "label": {**churn_model.card["label"], "horizon_days": 7}}
    manager.write("model", MARCH, churn_model.with_card(card))
    result = score_day(local_resources, instance, {DAY.isoformat(): synthetic_features(DAY, users=300)},
                       partition_key=DAY.isoformat())
    assert result.success
    (materialization,) = result.asset_materializations_for_node("predictions")
    assert materialization.metadata["horizon_days"].value == 7


def test_a_card_stored_before_its_version_hashed_it_and_edited_by_hand_still_stops_scoring(
    lake, local_resources, instance
):
    """A card whose model_version hashes the model file alone (stored before the version hashed the threshold and
    cut-offs: kept through an upgrade) cannot be checked against its version as it loads. Edited so that its
    cut-offs do not rise, it was refused by predictions before it was refused at load; after that change it
    scored again, banding users Critical and none High, and replaced the day's predictions. The step fails naming
    the card and what is wrong, and stores nothing."""
    frames = {DAY.isoformat(): synthetic_features(DAY, users=300)}
    assert score_day(local_resources, instance, frames, partition_key=DAY.isoformat()).success
    url = Lake(lake).table_url("predictions", "date", DAY.isoformat())
    before = Lake(lake).read_bytes(url)
    folder = Lake(lake).partition_url("model", "month", MARCH)
    card = json.loads(Lake(lake).read_bytes(f"{folder}/model_card.json"))
    card["model_version"] = f"{MARCH}-{sha256(Lake(lake).read_bytes(f'{folder}/{MODEL_FILE}'))[:8]}"
    card["risk_bands"]["Critical"] = 0.1
    Lake(lake).write_bytes(f"{folder}/model_card.json", card_bytes(card))
    assert ModelIOManager(base_url=lake).read("model", MARCH).version == card["model_version"]  # loads as it is

    result = dg.materialize(
        [features_stub(frames), stored_model(), predictions], resources=local_resources, instance=instance,
        partition_key=DAY.isoformat(), raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"the card of model[{MARCH}] (model_card.json of {card['model_version']})" in message
    assert "risk-band cut-offs do not rise" in message and f"materialize model[{MARCH}] again" in message
    assert failure.step_failure_data.user_failure_data is not None  # a dg.Failure: not retried
    assert Lake(lake).read_bytes(url) == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda card: card["risk_bands"].update(Critical=0.1),
        lambda card: card.pop("risk_bands"),
        lambda card: card.pop("threshold"),
        lambda card: card.update(threshold=round(card["threshold"] + 0.05, 6)),
        lambda card: next(f for f in card["features"] if f["kind"] == "categorical")["categories"].reverse(),
    ],
    ids=["bands_not_rising", "bands_missing", "threshold_missing", "threshold_moved", "categories_reordered"],
)
def test_a_card_edited_by_hand_stops_scoring_naming_the_card_and_keeps_the_days_predictions(
    lake, local_resources, instance, edit
):
    """A card edited by hand once scored: cut-offs that do not rise banded 400 of 1,000 users Critical and none
    High, a plausible threshold flagged another share, reordered categories changed every probability, and
    the day's stored predictions were replaced; a missing key was a bare KeyError. The model is now refused
    as it loads, naming its card and what is wrong, before any day is scored or stored."""
    frames = {DAY.isoformat(): synthetic_features(DAY, users=300)}
    assert score_day(local_resources, instance, frames, partition_key=DAY.isoformat()).success
    url = Lake(lake).table_url("predictions", "date", DAY.isoformat())
    before = Lake(lake).read_bytes(url)
    card_url = f"{Lake(lake).partition_url('model', 'month', MARCH)}/model_card.json"
    card = json.loads(Lake(lake).read_bytes(card_url))
    edit(card)
    Lake(lake).write_bytes(card_url, card_bytes(card))

    result = dg.materialize(
        [features_stub(frames), stored_model(), predictions], resources=local_resources, instance=instance,
        partition_key=DAY.isoformat(), raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    text = f"{error.message} {error.cause.message if error.cause else ''}"
    assert f"{card_url}: its threshold, risk-band cut-offs or feature categories are not the ones" in text
    assert f"materialize model[{MARCH}] again" in text
    assert Lake(lake).read_bytes(url) == before


def test_a_category_the_model_never_saw_is_counted_and_warned_of_when_it_is_most_users(lake, local_resources, instance):
    """A release that spells the platform "ios" where the model learnt "iOS" is scored as a missing platform: the
    scores move, and nothing failed. The day's metadata gives each categorical feature's share of users with a
    value the model never saw; above half of them, the log warns naming the feature, the values and what to do.
    A few users on a new app version are counted, not warned of."""
    features = synthetic_features(DAY, users=300)
    features = features.with_columns(
        pl.col("platform").str.to_lowercase(),
        pl.when(pl.int_range(pl.len()) < 30).then(pl.lit("9.9.9")).otherwise("app_version").alias("app_version"),
    )

    result = score_day(local_resources, instance, {DAY.isoformat(): features}, partition_key=DAY.isoformat())

    (materialization,) = result.asset_materializations_for_node("predictions")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["unseen_share/platform"] == 1.0
    assert metadata["unseen_share/app_version"] == pytest.approx(0.1)
    assert metadata["unseen_share/country"] == 0.0
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if "was not trained on" in e.user_message]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"predictions[{DAY}]: 100% of the users have a platform that model[2025-03]")
    assert "'ios'" in warnings[0] and "fix the export and re-deliver its days" in warnings[0]
