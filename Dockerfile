# drbackup: the daemon, every command, and PostgreSQL client and server binaries, so that
# backups of any older server and drills in ephemeral clusters run inside the image.
#
#   scripts/image build          # builds the base image (below) if missing, then this file
#   podman run --rm drbackup:dev --help
#
# Base: Debian trixie minbase made from Debian packages, e.g.
#   mmdebstrap --variant=minbase trixie base.tar http://deb.debian.org/debian
#   podman import base.tar localhost/drbackup-base:trixie
# (scripts/image does this; any debian:trixie image works too: --build-arg BASE_IMAGE=...).
# The suite pins the PostgreSQL major: trixie carries 17.  For another major build from a
# base with the PostgreSQL project's apt repository (apt.postgresql.org) and pass
# --build-arg PG_MAJOR=N; docs/deploy.md shows how.
# Python dependencies come from requirements.lock (scripts/lock), installed with
# --require-hashes: the build gets exactly the files locked or fails.
ARG BASE_IMAGE=localhost/drbackup-base:trixie

FROM ${BASE_IMAGE} AS runtime
ARG PG_MAJOR=17
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]
ENV LANG=C.UTF-8
# No "main" cluster from the server package: drills start their own (ephemeral) clusters.
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 tini zstd \
        "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --gid 10001 drbackup \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/drbackup --create-home \
        --shell /usr/sbin/nologin drbackup

FROM runtime AS builder
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /src/requirements.lock
# A machine behind a TLS-intercepting proxy passes its CA bundle as the build secret pip_ca
# (scripts/image does); without it pip uses its own roots.
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m venv /opt/drbackup \
    && /opt/drbackup/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --only-binary :all: -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY drbackup /src/drbackup
RUN /opt/drbackup/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation --no-index /src \
    && /opt/drbackup/bin/pip uninstall --yes --quiet setuptools wheel \
    && /opt/drbackup/bin/python -m compileall -q /opt/drbackup/lib

FROM runtime
ARG PG_MAJOR=17
# The PostgreSQL majors whose programs the image carries (docs/majors.md: its pg_dump and
# pg_restore serve every server and dump up to it; its server runs drills and restores).
LABEL io.drbackup.postgresql.majors="${PG_MAJOR}"
COPY --from=builder /opt/drbackup /opt/drbackup
COPY deploy/image/drbackup.yaml /etc/drbackup/drbackup.yaml
COPY schedules /etc/drbackup/schedules
COPY drills /etc/drbackup/drills
# DRBACKUP_LISTEN: the daemon's HTTP endpoint on every interface (127.0.0.1 outside a
# container).  DRBACKUP_HOME: default repository and catalog (a volume in production).
ENV PATH=/opt/drbackup/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRBACKUP_CONFIG=/etc/drbackup/drbackup.yaml \
    DRBACKUP_SCHEDULES=/etc/drbackup/schedules \
    DRBACKUP_HOME=/var/lib/drbackup \
    DRBACKUP_LISTEN=0.0.0.0:9612
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
WORKDIR /var/lib/drbackup
EXPOSE 9612
# The daemon's liveness endpoint, on the port of DRBACKUP_LISTEN (kept in the HEALTHCHECK by
# `podman build --format docker`; the OCI format has none).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; port = os.environ['DRBACKUP_LISTEN'].rpartition(':')[2]; u.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4)"]
# tini as PID 1 forwards SIGTERM to the daemon (which stops gracefully) and reaps orphans.
ENTRYPOINT ["/usr/bin/tini", "--", "drbackup"]
CMD ["daemon"]
