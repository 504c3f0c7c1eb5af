# The churn_assets code location as a gRPC code server.
#
#   docker build -t churn-assets .
#   docker run -p 4000:4000 -e CHURN_DATA_URL=s3://… -e CHURN_LANDING_URL=s3://… churn-assets
#
# The same image runs the webserver and the daemon (override the command; docs/operations.md), and it is
# the image of the ECS tasks the EcsRunLauncher starts for each run.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /opt/dagster/app

# Dependencies first, pinned by constraints.txt, so code changes do not reinstall them. The package is built in
# /tmp/src and installed into site-packages, and its sources removed: the code server runs in the workdir, and
# `dagster code-server start -m` puts it first on sys.path, so a churn_assets/ folder there is what it imports.
COPY pyproject.toml constraints.txt README.md /tmp/src/
RUN mkdir /tmp/src/churn_assets && touch /tmp/src/churn_assets/__init__.py \
    && pip install -c /tmp/src/constraints.txt /tmp/src \
    && pip uninstall -y churn_assets && rm -rf /tmp/src/churn_assets /tmp/src/build /tmp/src/churn_assets.egg-info

COPY churn_assets /tmp/src/churn_assets
RUN pip install --no-deps -c /tmp/src/constraints.txt /tmp/src && rm -rf /tmp/src

COPY dagster.yaml workspace.yaml ./
COPY deploy ./deploy

# A local lake or landing zone (the defaults ./data/…) is only writable when mounted here; use s3:// URLs
# for anything that outlives the container.
RUN useradd --system --create-home --uid 10001 dagster \
    && mkdir -p "$DAGSTER_HOME" data && chown dagster "$DAGSTER_HOME" data
USER dagster

EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions", "--location-name", "churn_assets"]
