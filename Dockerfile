# syntax=docker/dockerfile:1
#
# One image, two roles:
#   default command       supercronic runs the refresh every two hours (docker-cron)
#   gunicorn --config python:dashboard_api.gunicorn_config --bind 0.0.0.0:5000 \
#            'dashboard_api:create_app()'
#                         the reference dashboard API
# Build: docker build -t analytics-refresh .   compose.yaml shows the whole stack.
# PID 1 is tini -g: see ENTRYPOINT below for why.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- supercronic, checked against the SHA1 its release page publishes --------------------
FROM ${PYTHON_IMAGE} AS supercronic
# v0.2.51 from https://github.com/aptible/supercronic/releases/tag/v0.2.51 (linux-amd64).
# For another architecture pass SUPERCRONIC_ARCH and the SHA1 that release lists for it.
ARG SUPERCRONIC_VERSION=v0.2.51
ARG SUPERCRONIC_ARCH=amd64
ARG SUPERCRONIC_SHA1SUM=1692066e350a88ff4d7d6474fe3c7a6c41ec5e89
ADD https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${SUPERCRONIC_ARCH} /supercronic
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN echo "${SUPERCRONIC_SHA1SUM}  /supercronic" | sha1sum --check --strict - \
 && chmod 0755 /supercronic

# --- the virtualenv: dependencies, then the project --------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies before the code: this layer is rebuilt only when the lock changes. The lock
# pins every package, dependencies of dependencies included, each to its published hashes:
# the same versions in every build, and a tampered download fails the build.
COPY requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock
COPY pyproject.toml README.md api_key_auth.py ./
COPY analytics_refresh/ analytics_refresh/
COPY dashboard_api/ dashboard_api/
# A regular (not editable) install: the runtime stage copies the venv without /src.
RUN pip install --no-deps .

# --- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# LOG_FORMAT=json sends the run's log to stdout, where `docker logs` and log shippers read
# it; TZ=UTC makes the schedule and the log's timestamps UTC (deploy/SCHEDULE.md).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    TZ=UTC
# tini from Debian, the image's init (ENTRYPOINT below).
ARG TINI_VERSION=0.19.0-1*
RUN apt-get update \
 && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 analytics \
 && useradd --system --uid 10001 --gid analytics --home-dir /app --shell /usr/sbin/nologin analytics
COPY --from=supercronic /supercronic /usr/local/bin/supercronic
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY analytics_refresh_cron.py test_analytics_refresh_now.py docker-cron .env.example ./
# The code stays root-owned and read-only to the app user; only what the runner writes is
# its own: logs/ and .data/ (the embedded database, used only when DATABASE_URL is unset).
RUN mkdir logs .data \
 && chown analytics:analytics logs .data \
 && supercronic -test /app/docker-cron
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 5000
# Healthy while every cache is fresher than 2.5 hours. The start period covers the wait
# for the first scheduled run, up to two hours after the container starts.
HEALTHCHECK --interval=5m --timeout=60s --start-period=150m --retries=2 \
    CMD ["analytics-refresh", "status"]
# `docker stop` signals PID 1 only, and supercronic, on SIGTERM, stops scheduling and waits
# for the running job without passing the signal on (its issue #62). tini -g sends every
# signal to its child's whole process group, supercronic and the run alike, so a stopped
# container's run finishes its requests in flight and records itself as interrupted
# (exit 6). Give `docker stop` a grace above REFRESH_TIMEOUT: docker stop -t 330.
ENTRYPOINT ["tini", "-g", "--"]
# -passthrough-logs: the runner's JSON lines reach stdout unwrapped; -json: supercronic's
# own lines are JSON too.
CMD ["supercronic", "-json", "-passthrough-logs", "/app/docker-cron"]
