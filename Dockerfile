# drbackup in a container: `docker run --rm drbackup --help`.
# pg_dump/pg_restore come from Debian bookworm's postgresql-client (PostgreSQL 15); pg_dump
# refuses servers of a newer major version, so back up PostgreSQL 16+ from an image built
# with a newer client (e.g. from apt.postgresql.org).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client zstd \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group drbackup
USER drbackup
WORKDIR /home/drbackup

ENTRYPOINT ["drbackup"]
CMD ["--help"]
