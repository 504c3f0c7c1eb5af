"""S3 over HTTPS with a certificate of a private CA (a company's MinIO): the session's S3 server behind a TLS proxy on
loopback whose certificate a CA of the test's own signs. botocore (s3fs) and polars each check it against their own
trust: botocore against AWS_CA_BUNDLE, polars against the system store or SSL_CERT_FILE."""

import dagster as dg
import polars as pl
import pytest
from s3fs import S3FileSystem

from churn_assets.assets.ingest.raw_events import raw_events
from churn_assets.config import ChurnSettings
from churn_assets.resources import build_resources
from churn_assets.resources.filesystems import StorageCertificateError, StorageSettingsError
from churn_assets.resources.lake import Lake
from churn_assets_tests.landing_helpers import amplitude_row, jsonl, write_landing_day
from churn_assets_tests.tls_proxy import TlsProxy, private_ca

pytestmark = pytest.mark.s3

# Variables that could hand either client a CA (this machine's own environment sets some).
_TRUST_VARIABLES = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture
def https_s3(s3_server, tmp_path, monkeypatch):
    """A function that puts the session's S3 server behind HTTPS with a certificate for ``names`` signed by a new
    private CA, points AWS_ENDPOINT_URL at it and returns the CA's PEM file. Neither client trusts the CA until
    a test says so; one attempt per request (botocore's and polars'), so a refused certificate fails at once."""
    proxies = []

    def behind_https(names=("localhost", "127.0.0.1")):
        certificates = private_ca(tmp_path / f"pki-{len(proxies)}", names)
        proxies.append(TlsProxy(s3_server.endpoint, certificates))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxies[-1].endpoint)
        S3FileSystem.clear_instance_cache()  # s3fs clients remember the endpoint they were created for
        return str(certificates.ca)

    for name in _TRUST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("POLARS_CLOUD_MAX_RETRIES", "0")
    try:
        yield behind_https
    finally:
        for proxy in proxies:
            proxy.close()
        monkeypatch.undo()
        S3FileSystem.clear_instance_cache()


def _table_url(tmp_path, name: str) -> str:
    return f"s3://lake/{tmp_path.name}/{name}/date=2025-01-01/data.parquet"


def test_the_lake_works_over_https_with_the_ca_given_to_both_clients(https_s3, tmp_path, monkeypatch):
    """AWS_CA_BUNDLE for botocore's writes, listings and downloads, SSL_CERT_FILE for polars' reads: every kind of
    call the lake makes goes through."""
    ca = https_s3()
    monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    lake = Lake(f"s3://lake/{tmp_path.name}")
    url = _table_url(tmp_path, "features")
    frame = pl.DataFrame({"user_id": ["u1", "u2", "u1"], "n": [1, 2, 3]})
    written = lake.write_table(url, frame)
    assert lake.etags([url]) == {url: written.etag}
    assert pl.read_parquet(lake.read_bytes(url)).equals(frame)
    assert list(lake.table_schema(url)) == ["user_id", "n"]
    assert lake.rows_by_value([url], "user_id") == {url: {"u1": 2, "u2": 1}}


def test_a_certificate_of_an_unknown_ca_names_the_endpoint_and_the_variable_each_client_reads(
    https_s3, tmp_path, monkeypatch
):
    """Without the CA, a write said "S3 unreachable" after botocore's retries (and raw_events retried it twice more),
    and with AWS_CA_BUNDLE alone (what the AWS tools read) the writes went through but polars' reads (erase, adopt,
    training_set's footers) failed from inside Rust: "object-store error: Generic S3 error ... invalid peer
    certificate: UnknownIssuer", after 8 retries. Now each says the certificate is not trusted, at which endpoint,
    and what its client reads: AWS_CA_BUNDLE, or the system store or SSL_CERT_FILE (never AWS_CA_BUNDLE)."""
    ca = https_s3()
    lake = Lake(f"s3://lake/{tmp_path.name}")
    url = _table_url(tmp_path, "features")
    with pytest.raises(StorageCertificateError, match="not trusted") as refused:
        lake.write_table(url, pl.DataFrame({"user_id": ["u1"]}))
    message = str(refused.value)
    assert "S3 at https://127.0.0.1:" in message and f"could not write {url}" in message, message
    assert "set AWS_CA_BUNDLE to the PEM file of the CA" in message, message

    monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    S3FileSystem.clear_instance_cache()
    lake = Lake(f"s3://lake/{tmp_path.name}")
    lake.write_table(url, pl.DataFrame({"user_id": ["u1"]}))  # botocore trusts it now
    with pytest.raises(StorageCertificateError, match="not trusted") as refused:
        lake.table_schema(url)
    message = str(refused.value)
    assert f"could not read {url}" in message and "never AWS_CA_BUNDLE" in message, message
    assert "set SSL_CERT_FILE to a PEM bundle that holds it" in message, message
    with pytest.raises(StorageCertificateError, match="SSL_CERT_FILE"):
        lake.rows_by_value([url], "user_id")


def test_a_certificate_for_another_host_says_so(https_s3, tmp_path, monkeypatch):
    """A certificate signed by the trusted CA for another name than the endpoint's host: each client says it is not
    valid for that host, and which variable holds the endpoint."""
    ca = https_s3(names=("minio.internal",))
    monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    lake = Lake(f"s3://lake/{tmp_path.name}")
    url = _table_url(tmp_path, "features")
    with pytest.raises(StorageCertificateError, match="not valid for 127.0.0.1") as refused:
        lake.write_table(url, pl.DataFrame({"user_id": ["u1"]}))
    assert "the certificate names in AWS_ENDPOINT_URL" in str(refused.value)
    with pytest.raises(StorageCertificateError, match="not valid for 127.0.0.1"):
        lake.table_schema(url)


def test_raw_events_does_not_retry_an_untrusted_certificate(https_s3, tmp_path):
    """A refused certificate is a setting to fix, not an outage: raw_events fails at once, without its two retries,
    saying which variable to set."""
    landing = f"s3://landing/{tmp_path.name}"
    row = amplitude_row("e1", "u1", "2025-01-01 10:00:00.000000")
    write_landing_day(landing, "2025-01-01", {"part-00000.jsonl": jsonl([row])})  # over plain HTTP, before
    https_s3()
    resources = build_resources(ChurnSettings(data_url=str(tmp_path / "lake"), landing_url=landing))
    result = dg.materialize(
        [raw_events], resources=resources, partition_key="2025-01-01", instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.to_string()
    assert "its TLS certificate is not trusted" in error and "AWS_CA_BUNDLE" in error, error


def test_a_ca_variable_that_names_no_file_fails_naming_it(https_s3, tmp_path, monkeypatch):
    """AWS_CA_BUNDLE naming no file made botocore say "An HTTP Client raised an unhandled exception: [Errno 2] No such
    file or directory" (a traceback from simulate; raw_events retried it), SSL_CERT_FILE naming none made polars say
    "No CA certificates were loaded from the system": neither named the variable or the file. Now both do, before
    any request."""
    ca = https_s3()
    missing = str(tmp_path / "company-ca.pem")
    root = f"s3://lake/{tmp_path.name}"
    url = _table_url(tmp_path, "features")
    monkeypatch.setenv("AWS_CA_BUNDLE", missing)
    with pytest.raises(StorageSettingsError, match=f"AWS_CA_BUNDLE='{missing}' is not a file: botocore"):
        Lake(root).write_table(url, pl.DataFrame({"user_id": ["u1"]}))
    monkeypatch.delenv("AWS_CA_BUNDLE")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", missing)  # what botocore reads without AWS_CA_BUNDLE
    with pytest.raises(StorageSettingsError, match=f"REQUESTS_CA_BUNDLE='{missing}' is not a file: botocore"):
        Lake(root).exists(url)
    monkeypatch.setenv("AWS_CA_BUNDLE", ca)  # botocore reads it, not REQUESTS_CA_BUNDLE
    lake = Lake(root)
    lake.write_table(url, pl.DataFrame({"user_id": ["u1"]}))
    monkeypatch.setenv("SSL_CERT_FILE", missing)
    with pytest.raises(StorageSettingsError, match=f"SSL_CERT_FILE='{missing}' is not a file: polars"):
        lake.table_schema(url)
    monkeypatch.setenv("SSL_CERT_FILE", "")  # (an env file's SSL_CERT_FILE=): polars takes it for a file name too
    with pytest.raises(StorageSettingsError, match="SSL_CERT_FILE='' is not a file: polars"):
        lake.table_schema(url)
