# syntax=docker/dockerfile:1
# The vspc-etl image: `docker build -t vspc-etl .`; docker-compose.yml runs it next to PostgreSQL.
# One image, three uses: `run` (the default: the scheduled daemon), `migrate`, `simulate`.

ARG PYTHON_VERSION=3.12

# ---------------------------------------------------------------- build: a self-contained venv
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/vspc-etl
# Dependencies first, in a layer of their own that survives code changes: exactly the
# versions and files of requirements.lock, every one checked against its hash, wheels only
# (no compiler here). The lock is pip-compile's resolution of pyproject.toml (its header has
# the command: run it again when a dependency changes); every pin has a wheel for this image
# (CPython 3.12, Linux x86_64), which `pip download --require-hashes --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 -r requirements.lock -d DIR` checks
# without Docker. It leaves out pgserver (the embedded PostgreSQL for laptops, with its own
# server binaries: in a container DATABASE_URL is always set), what only pgserver needs, and
# the extra [chart].
COPY requirements.lock ./
RUN /opt/vspc-etl/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY etl ./etl
COPY migrations ./migrations
# The package and its alembic migrations (packages `etl*` and `migrations*`) with the SQL
# definitions, checked; its dependencies are the lock's.
RUN /opt/vspc-etl/bin/pip install --no-deps . \
 && /opt/vspc-etl/bin/python -c "import etl.cli, etl.sql; from importlib.resources import files; assert files('migrations').joinpath('env.py').is_file(); assert etl.sql.objects()"

# ---------------------------------------------------------------- runtime: no compiler, no pip cache
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="vspc-etl" \
      org.opencontainers.image.description="Veeam Service Provider Console agent jobs into PostgreSQL, with history" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 vspc \
 && useradd --system --uid 10001 --gid vspc --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin vspc
COPY --from=build /opt/vspc-etl /opt/vspc-etl
ENV PATH="/opt/vspc-etl/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    HTTP_PORT=8080
WORKDIR /app
# A numeric user, so an orchestrator's runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness of `vspc-etl run` (HTTP_PORT=0 turns the endpoint off: disable the check then).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["vspc-etl"]
CMD ["run"]
