# syntax=docker/dockerfile:1
# The eventix image: `eventix operator | worker | api | migrate | …` (ENTRYPOINT is `eventix`).
#   docker build -t eventix-operator .
# Task code goes into an image of your own, built FROM this one:
#   FROM eventix-operator
#   COPY myapp /app/myapp          (or: RUN pip install --no-cache-dir myapp, as root)
# and run `eventix worker --tasks myapp.tasks`; /app is on PYTHONPATH and the working directory.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of this package, installed with its dependencies into /opt/venv ----------
FROM ${PYTHON_IMAGE} AS build
# The package's extras in the image: `otel` (OpenTelemetry traces, off unless OTEL_* variables
# turn them on; docs/observability.md). `--build-arg EXTRAS=` leaves them out.
ARG EXTRAS=otel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies are binary wheels (psycopg[binary], pydantic-core, …): no compiler needed.
# The venv keeps pip (images FROM this one install task code with it) but no build backend.
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY eventix_operator ./eventix_operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install "$(echo /wheels/*.whl)${EXTRAS:+[$EXTRAS]}" \
 && /opt/venv/bin/pip uninstall --yes setuptools wheel

# --- runtime: the base image, the virtual environment, a numeric non-root user ---------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="eventix-operator" \
      org.opencontainers.image.description="Eventix task queue and schedules on PostgreSQL, the Kubernetes way" \
      org.opencontainers.image.licenses="MIT"
# The user the chart runs as (podSecurityContext.runAsUser); /tmp is its home, the only place
# it may write (the chart mounts an emptyDir there on a read-only root file system).
RUN groupadd --gid 10001 eventix \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin eventix \
 && mkdir /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EVENTIX_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
# operator: kopf liveness; api: HTTP; both: Prometheus metrics.
EXPOSE 8080 8000 9090
ENTRYPOINT ["eventix"]
CMD ["--help"]
