# syntax=docker/dockerfile:1
# The UniBazzar health checks as an image: the plugin and the checks installed as one wheel,
# every dependency at the version requirements/checks.lock pins, run as a non-root user by
# deploy/docker/entrypoint.sh in the run mode $UNIBAZZAR_RUN_MODE names (docs/delivery.md).
#
#   docker build -t unibazzar-health:0.1.0 .
#   docker run --rm -e UNIBAZZAR_ENV_FILE=/etc/unibazzar-health/environment.toml \
#     -v "$PWD/environments/production.toml:/etc/unibazzar-health/environment.toml:ro" \
#     --env-file production.secrets unibazzar-health:0.1.0 -m order-service
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: every wheel the checks need, built or fetched here and only here.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/checks.lock requirements/checks.lock
COPY pyproject.toml setup.py README.md ./
COPY plugins plugins
COPY checks checks
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements/checks.lock .

# Stage 2: a venv installed from those wheels alone (--no-index): no compiler, no pip or
# setuptools in the venv, no wheel left in a layer (they are bind-mounted, not copied).
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/unibazzar-health \
    PATH=/opt/unibazzar-health/bin:$PATH \
    UNIBAZZAR_RUN_MODE=scheduled
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/unibazzar-health \
    && pip --python /opt/unibazzar-health/bin/python install --no-cache-dir --no-index \
        --find-links=/wheels /wheels/unibazzar_health-*.whl \
    && groupadd --system --gid 10001 unibazzar \
    && useradd --system --uid 10001 --gid 10001 --create-home \
        --home-dir /var/lib/unibazzar-health unibazzar
COPY deploy/docker/entrypoint.sh /usr/local/bin/unibazzar-health-entrypoint
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# The working directory plays the repository's part: ./environments/NAME.toml for --env NAME,
# ./reports for the outputs (mount a volume here, or set UNIBAZZAR_REPORTS_DIR).
WORKDIR /var/lib/unibazzar-health
ENTRYPOINT ["unibazzar-health-entrypoint"]
