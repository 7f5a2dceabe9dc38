# The service's production image (docs/DEPLOYMENT.md).
#
#   docker build -t healthcomp .
#   docker run -d --init -p 8082:8082 -v healthcomp-data:/data \
#       -e SUPABASE_JWT_SECRET=... healthcomp            # embedded Redis in /data
#   docker run -d --init -p 8082:8082 -e REDIS_URL=redis://redis-host:6379/0 \
#       -e SUPABASE_URL=https://<project>.supabase.co healthcomp   # external Redis
#
# The entrypoint is the `healthcomp` command, so `docker run --rm healthcomp token ...`
# or `... healthcomp payouts --once --provider mypay:pay_line` run the other subcommands
# with the same settings.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# builder: a wheel for the service and for every dependency, then a virtual environment
# installed from those wheels only. Nothing of this stage but the environment is kept.
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
# Only what the package is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY src ./src

# The runtime dependencies only: the `dev` extra (pytest, ruff, mypy...) is not asked for.
# The environment has no pip of its own: the builder's pip installs into it. numpy's own
# test suites (17 MB) are not needed to run.
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/healthcomp \
 && pip --python /opt/healthcomp/bin/python install --no-index --find-links /wheels healthcomp \
 && find /opt/healthcomp/lib -type d -path '*/site-packages/numpy/*' -name tests -prune \
        -exec rm -rf {} + \
 && /opt/healthcomp/bin/healthcomp --help > /dev/null

# ---------------------------------------------------------------------------------------
# runtime: the slim base, the environment, an unprivileged user.
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="healthcomp" \
      org.opencontainers.image.description="Fitness competitions API: live leaderboards, activity sync and payouts, on Redis"

# A fixed uid/gid, so a host directory mounted at /data can be given to it (chown 10001).
RUN groupadd --system --gid 10001 healthcomp \
 && useradd --system --uid 10001 --gid healthcomp --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin healthcomp \
 && mkdir -p /data \
 && chown healthcomp:healthcomp /data \
 && chmod 0700 /data

COPY --from=builder /opt/healthcomp /opt/healthcomp

# ENVIRONMENT=production: the service refuses to start without SUPABASE_JWT_SECRET or
# SUPABASE_URL (and refuses a placeholder secret) instead of inventing a dev secret.
# HC_DATA_DIR: the embedded Redis (used when REDIS_URL is unset) keeps its append-only
# file under /data/redis; with REDIS_URL set nothing is written there.
ENV PATH=/opt/healthcomp/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HC_DATA_DIR=/data

# An empty, read-only working directory: settings also come from a `.env` in the working
# directory, so one can be mounted at /app/.env (read-only) instead of passing -e flags.
WORKDIR /app

VOLUME ["/data"]
EXPOSE 8082
USER healthcomp:healthcomp

# Liveness: /health answers without touching Redis (a Redis outage is a 503 the service
# recovers from by itself, not a reason to restart it). No curl in the image: Python's
# urllib exits non-zero on a refused connection, a timeout or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8082/health', timeout=4)"]

# SIGTERM (docker stop) closes WebSockets with 1001, lets the workers finish and then
# stops the embedded Redis; give it the time (`docker stop -t 30`, compose's
# stop_grace_period). Workers: HC_WORKERS or `--workers N`; server: HC_SERVER or
# `--server uvicorn|granian` (uvicorn by default).
ENTRYPOINT ["healthcomp"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8082"]
