# syntax=docker/dockerfile:1
# Highway in a container. Two stages:
#   build    compiles Highway's `codec` extension and builds wheels of Highway and of every
#            dependency (so nothing in the final image needs a compiler);
#   runtime  installs those wheels without gcc, runs `highway serve` as a non-root user.
#
#   docker build -t highway .
#   docker run --init --stop-timeout 45 -p 8000:8000 -e HIGHWAY_API_KEY=change-me \
#       -v highway-data:/app/data highway
#
# Without HIGHWAY_DATABASE_URL the database is SQLite in /app/data (one worker); with a
# postgresql:// URL, HIGHWAY_WORKERS sets the worker processes. See docker-compose.yml.
# Needs BuildKit (the default builder since Docker Engine 23 and in Compose v2).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# gcc and the C library headers: enough for a C extension (Python's headers ship with the
# image). Bookworm's gcc 12, the compiler Highway is developed and benchmarked with.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# The same build tools as the Makefile's .venv/.base, installed here so that the wheel is
# built without pip's isolated build environment. Ranges, as in pyproject.toml.
# hadolint ignore=DL3013
RUN python -m pip install --upgrade pip 'setuptools>=77' 'cython>=3.1,<4' wheel

WORKDIR /src
# Only what the wheel is built from (README.md: pyproject's `readme`).
COPY pyproject.toml setup.py README.md ./
COPY codec/ codec/
COPY highway/ highway/

# Highway's wheel (compiling codec) and its dependencies' wheels, all into /wheels. The
# import, from the wheel's files alone (-P: not from the sources in /src), proves that the
# wheel holds the compiled extension and that it loads.
RUN python -m pip wheel --no-build-isolation --wheel-dir /wheels . \
    && python -m pip install --no-index --no-deps --target /tmp/check /wheels/highway-*.whl \
    && PYTHONPATH=/tmp/check python -P -c 'import codec; print("codec kernel:", codec.SIMD_KERNEL)'

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="Highway" \
      org.opencontainers.image.description="Phone-to-AI voice bridge: Twilio Media Streams to speech-to-speech models" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheels are mounted for this step only, so they take no room in the image; only
# wheels, so nothing is compiled here. (DL3013: the versions are the wheels'.)
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --only-binary=:all: --find-links /wheels highway

# A fixed, non-root user; /app/data is where the SQLite default keeps its file. Mount a
# volume there to keep it (no VOLUME here: with PostgreSQL it would be an unused anonymous
# volume); a new named volume mounted on it starts with this ownership.
RUN groupadd --system --gid 10001 highway \
    && useradd --system --uid 10001 --gid highway --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin highway \
    && mkdir -p /app/data \
    && chown highway:highway /app/data

WORKDIR /app
USER 10001:10001

# SQLite unless HIGHWAY_DATABASE_URL says otherwise (docker-compose.yml sets PostgreSQL).
ENV HIGHWAY_DATABASE_URL=sqlite:////app/data/highway.db

EXPOSE 8000

# Liveness: /health answers while the server runs (slim has no curl, hence urllib). An
# error status or no answer raises, and so exits 1: unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# A shell so that HIGHWAY_WORKERS expands, and `exec` so that highway itself gets SIGTERM
# (docker stop) and shuts down gracefully. `highway serve` refuses 0.0.0.0 unless
# HIGHWAY_API_KEY is set, and more than one worker unless the database is PostgreSQL.
CMD ["/bin/sh", "-c", "exec highway serve --host 0.0.0.0 --port 8000 --workers \"${HIGHWAY_WORKERS:-1}\""]
