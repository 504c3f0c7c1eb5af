"""The real webserver: ``dagster-webserver`` on loopback, reading the code location from a gRPC code server
(as the Docker image serves it, through deploy/workspace.yaml), answers GraphQL with the whole graph."""

import pytest

from churn_assets.definitions import defs
from churn_assets_tests.dagster_processes import (
    ROOT,
    DagsterProcess,
    executable,
    free_port,
    graphql,
    instance_home,
    run_env,
    wait_until,
)

pytestmark = pytest.mark.slow

DESIGN_ASSETS = {
    "raw_events", "install_times", "user_daily", "features", "labels",
    "training_set", "model", "predictions", "drift_report",
}
DESIGN_SCHEDULES = {
    "daily_refresh": ("0 2 * * *", "daily_refresh"),
    "weekly_scoring": ("0 3-23 * * 1", "weekly_scoring"),
    "monthly_retraining": ("0 4-23 1 * *", "monthly_retraining"),
}
DESIGN_SENSORS = {"landing_sensor", "drift_retraining_sensor", "run_failure_alert"}

WORKSPACE = """{
  workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
  } } }
}"""

GRAPH = """{
  assetNodes {
    assetKey { path } groupName description kinds isPartitioned
    dependencyKeys { path }
    partitionDefinition { type name fmt }
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    backfillPolicy { policyType }
    hasAssetChecks
    assetChecksOrError { ... on AssetChecks { checks { name description } } }
    metadataEntries { label ... on TableSchemaMetadataEntry {
      schema { columns { name description constraints { nullable unique } } }
    } }
  }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name }
    schedules { name cronSchedule executionTimezone pipelineName description }
    sensors { name description minIntervalSeconds sensorType defaultStatus targets { pipelineName } }
  } } }
}"""

RESOURCES = """query($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    ... on ResourceDetailsList { results {
      name description configFields { name description } configuredValues { key value type }
    } }
  }
}"""
# A Slack-like webhook: the URL is the credential.
WEBHOOK = "https://hooks.example.com/services/T0/B0/secret-token"


@pytest.fixture
def webserver(tmp_path):
    home = instance_home(tmp_path / "dagster_home", create_storage=True)
    env = run_env(
        home, CHURN_DATA_URL=str(tmp_path / "lake"), CHURN_LANDING_URL=str(tmp_path / "landing"),
        CHURN_ALERT_WEBHOOK=WEBHOOK,
    )
    grpc_port, web_port = free_port(), free_port()
    code_server = DagsterProcess(
        [executable("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port),
         "-m", "churn_assets.definitions", "--location-name", "churn_assets"],
        env, tmp_path / "code_server.log",
    )
    web = DagsterProcess(
        [executable("dagster-webserver"), "-w", str(ROOT / "deploy" / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(web_port)],
        {**env, "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(grpc_port)},
        tmp_path / "webserver.log",
    )
    try:
        def loaded():
            (entry,) = graphql(web_port, WORKSPACE)["workspaceOrError"]["locationEntries"]
            if entry["loadStatus"] != "LOADED":
                return None
            location = entry["locationOrLoadError"]
            assert location["__typename"] == "RepositoryLocation", location
            return entry

        wait_until(loaded, 60, "the code location to load in the webserver", code_server, web)
        yield web_port
    finally:
        web.stop()
        code_server.stop()


def test_webserver_serves_the_asset_graph_schedules_and_sensors(webserver):
    data = graphql(webserver, GRAPH)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}

    # Exactly what the definitions declare, with the nine assets of DESIGN.md among them.
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assert set(nodes) == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert DESIGN_ASSETS <= set(nodes)
    for name, node in nodes.items():
        assert node["description"], f"{name} has no description"
        assert node["kinds"], f"{name} has no kinds"
        assert node["owners"], f"{name} has no owners"
        assert node["isPartitioned"] and node["partitionDefinition"]["type"] == "TIME_WINDOW", name
        assert node["backfillPolicy"]["policyType"] == "SINGLE_RUN", name

    deps = {name: {"/".join(d["path"]) for d in node["dependencyKeys"]} for name, node in nodes.items()}
    for key in graph.get_all_asset_keys():
        expected = {p.to_user_string() for p in graph.get(key).parent_keys}
        assert deps[key.to_user_string()] == expected, key
    assert deps["install_times"] == {"raw_events", "install_times"}
    assert deps["user_daily"] == {"raw_events", "install_times"}
    assert {"user_daily", "install_times"} <= deps["features"]
    assert {"features", "user_daily"} <= deps["labels"]
    assert deps["training_set"] == {"labels", "features"}  # the labels, and their snapshots' features
    assert "model" in deps["predictions"] and "features" in deps["predictions"]

    fmt = {name: node["partitionDefinition"]["fmt"] for name, node in nodes.items()}
    assert {fmt[a] for a in ("raw_events", "features", "labels", "predictions", "drift_report")} == {"%Y-%m-%d"}
    assert {fmt[a] for a in ("training_set", "model")} == {"%Y-%m"}
    assert {nodes[a]["groupName"] for a in ("raw_events", "install_times", "user_daily")} == {"ingest"}
    assert {nodes[a]["groupName"] for a in ("features", "labels")} == {"features"}
    assert {nodes[a]["groupName"] for a in ("training_set", "model", "predictions")} == {"ml"}
    assert nodes["drift_report"]["groupName"] == "monitoring"
    assert nodes["raw_events"]["hasAssetChecks"]

    # Every stored table's columns say what they hold; its key is never null and unique (features' as
    # docs/features.md's "key | no"), and what may be missing is shown nullable.
    columns = {
        asset: {c["name"]: c for c in entry["schema"]["columns"]}
        for asset, node in nodes.items()
        for entry in node["metadataEntries"]
        if entry["label"] == "dagster/column_schema"
    }
    assert set(columns) == {
        "raw_events", "install_times", "user_daily", "features", "labels", "training_set", "predictions",
        "drift_report",
    }
    assert not [(a, c) for a, cs in columns.items() for c, column in cs.items() if not column["description"]]
    keyless = ("raw_events", "training_set", "drift_report")  # a user has a row per snapshot in a training set
    keys = {"raw_events": "event_id", "training_set": None, "drift_report": None} | {
        a: "user_id" for a in columns if a not in keyless
    }
    for asset, key in keys.items():
        unique = [c for c, column in columns[asset].items() if column["constraints"]["unique"]]
        assert unique == ([key] if key else []), asset
        if key:
            assert columns[asset][key]["constraints"]["nullable"] is False
    assert columns["raw_events"]["user_id"]["constraints"]["nullable"] is False
    assert columns["raw_events"]["session_id"]["constraints"]["nullable"] is True
    assert columns["predictions"]["top_reason_2"]["constraints"]["nullable"] is True
    assert list(columns["training_set"])[:4] == ["user_id", "snapshot_date", "label_date", "churned"]
    assert columns["training_set"]["churned"]["constraints"]["nullable"] is False
    assert columns["training_set"]["activity_slope_28d"]["constraints"]["nullable"] is True
    assert columns["training_set"]["n_events_7d"]["description"] == columns["features"]["n_events_7d"]["description"]
    # The label-rate band is the closed one the check applies and the README states, not a tuple that reads open.
    (check,) = nodes["training_set"]["assetChecksOrError"]["checks"]
    assert "label rate within [0.01, 0.9]," in check["description"]

    ((repo),) = data["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == "churn_assets"
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert set(schedules) == set(DESIGN_SCHEDULES)
    for name, (cron, job) in DESIGN_SCHEDULES.items():
        assert (schedules[name]["cronSchedule"], schedules[name]["pipelineName"]) == (cron, job)
        assert schedules[name]["executionTimezone"] == "UTC"
        assert schedules[name]["description"]
    # What the UI says of daily_refresh covers the range run it starts after missed ticks (README).
    assert "After missed ticks" in schedules["daily_refresh"]["description"]
    assert "up to 31 days back" in schedules["daily_refresh"]["description"]
    sensors = {s["name"]: s for s in repo["sensors"]}
    assert set(sensors) == DESIGN_SENSORS
    assert [t["pipelineName"] for t in sensors["landing_sensor"]["targets"]] == ["daily_refresh"]
    assert [t["pipelineName"] for t in sensors["drift_retraining_sensor"]["targets"]] == ["monthly_retraining"]
    assert sensors["landing_sensor"]["minIntervalSeconds"] == 60
    assert sensors["run_failure_alert"]["sensorType"] == "RUN_STATUS"
    assert sensors["run_failure_alert"]["defaultStatus"] == "RUNNING"
    assert all(s["description"] for s in sensors.values())
    # The alert's fields as the README states them and the sensor posts them.
    assert (
        "{app, run_id, job, partition, failed_steps, error, dagster_event}"
        in sensors["run_failure_alert"]["description"]
    )

    selector = {"repositoryName": repo["name"], "repositoryLocationName": "churn_assets"}
    details = graphql(webserver, RESOURCES, {"selector": selector})["allTopLevelResourceDetailsOrError"]
    resources = {r["name"]: r for r in details["results"]}
    # The resource page names the variable that holds the webhook, never its URL.
    url = next(v for v in resources["alerts"]["configuredValues"] if v["key"] == "url")
    assert (url["type"], url["value"]) == ("ENV_VAR", "CHURN_ALERT_WEBHOOK")
    assert "secret-token" not in str(details)
    assert {"io_manager", "lake", "landing", "churn", "alerts"} <= set(resources)
    for name, resource in resources.items():
        assert resource["description"], f"resource {name} has no description"
        assert all(field["description"] for field in resource["configFields"]), name


def test_the_definitions_hold_every_check_the_readme_lists():
    """The README's table of checks (name, asset, blocking) is what the definitions hold: each domain lists its
    checks by hand, and one left out of a list was never evaluated, without any error."""
    import re

    readme = (ROOT / "README.md").read_text()
    listed = {
        name: (asset, blocking == "yes")
        for name, asset, blocking in re.findall(r"^\| `(\w+)` \| `(\w+)` \| (yes|no)\b", readme, re.MULTILINE)
    }
    assert len(listed) == 8
    graph = defs.get_repository_def().asset_graph
    declared = {
        key.name: (key.asset_key.to_user_string(), graph.get_check_spec(key).blocking) for key in graph.asset_check_keys
    }
    assert declared == listed
