#!/bin/sh
# Run once by the postgres image when its data volume is created: a pg_hba.conf line for
# replication connections from the drbackup container, which streams the WAL with
# pg_receivewal through a slot it creates (docs/pitr.md, "WAL streaming").  The compose demo
# connects as `postgres` for brevity; in production use a role with LOGIN REPLICATION.
set -eu
echo "host replication postgres all scram-sha-256" >> "$PGDATA/pg_hba.conf"
