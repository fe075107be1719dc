# The banking service: one image for every role (docs/delivery.md, "Container image").
#
#   docker run IMAGE serve            REST + gRPC (the default)
#   docker run IMAGE grpc             gRPC alone
#   docker run IMAGE worker relay     an event worker (relay, processor, dlq, balance-cache, ...)
#   docker run IMAGE migrate          apply the database migrations, then exit
#
# The base is a build argument: any image with python3 (>= 3.11) and its venv module. The
# default is the official Python image; the tests build on a local Debian base with Debian's
# python3 (scripts/build-image.sh). Both stages use the same base, so the virtual environment
# copied from the first runs on the interpreter of the second.
# No secret is baked in: JWT_SECRET, COMMAND_SIGNING_KEYS, DATABASE_URL... come at run time.
ARG BASE=python:3.12-slim

# The pinned runtime dependencies, read from pyproject.toml. Only this file goes on to the
# builder, so an edit elsewhere in pyproject.toml (tool settings, dev pins) keeps the
# dependency layer below cached.
FROM ${BASE} AS requirements
WORKDIR /build
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt

FROM ${BASE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python3 -m venv /opt/venv
# Dependencies first: a change under src/ reuses this layer.
COPY --from=requirements /build/requirements.txt ./
RUN /opt/venv/bin/pip install --requirement requirements.txt setuptools==84.2.1

# Then the project itself, as a wheel, without touching the dependencies. The build tools
# (pip, setuptools) leave the environment before it is copied to the final stage, and so do
# the test suites and C headers the scientific wheels ship (about 80 MB nothing imports).
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /build/dist . \
    && /opt/venv/bin/pip install --no-deps /build/dist/*.whl \
    && /opt/venv/bin/pip uninstall --yes setuptools pip \
    && for package in numpy scipy sklearn pyarrow; do \
        find /opt/venv/lib/python3*/site-packages/$package -depth -type d -name tests \
            -exec rm -rf {} +; \
    done \
    && rm -rf /opt/venv/lib/python3*/site-packages/pyarrow/include

FROM ${BASE}
# Settings are environment variables (src/banking/config.py): listen on every address of the
# container, keep the embedded data (SQLite file, fraud models) in /data.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    GRPC_PORT=50051 \
    DATA_DIR=/data
RUN groupadd --gid 10001 banking \
    && useradd --uid 10001 --gid banking --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin banking \
    && mkdir -p /data \
    && chown banking:banking /data
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
EXPOSE 8000 50051
# The API's liveness (GET /health on PORT) when the container serves it; the other roles have
# no HTTP port of their own and are healthy while they run (compose and Kubernetes probe the
# gRPC health service of `banking grpc` themselves). PID 1 is `python3 .../banking ROLE`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; role = open('/proc/1/cmdline', 'rb').read().split(b'\\0')[2:3]; sys.exit(0) if role != [b'serve'] else urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["banking"]
CMD ["serve"]
