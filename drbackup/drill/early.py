"""Hashing tables while the restore is still running: verification that costs no RTO.

pg_restore loads tables one after another, then spends a long post-data phase building
indexes and constraints.  A table whose rows are all in can be hashed then, on the other
core, instead of after the restore.  :class:`EarlyHasher` watches the scratch database and
hashes each table once its insert count has reached the row count of the manifest's
fingerprint and no COPY into it is running.

Why this is safe.  A table counts as verified only when its row count and content hash
EQUAL the manifest's fingerprint; pg_restore never changes a table's rows after loading it
(post-data creates indexes, constraints and triggers; materialized views, which it refreshes
at the end, are never hashed early).  A table hashed too early (a guess that was wrong) just
does not match and is hashed again after the restore, as every other table is.  So the
early pass can only save time, never change a verdict.

The hashing uses the fingerprint's own query and session settings, on one core
(``max_parallel_workers_per_gather = 0``) so the restore keeps the other.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg

from drbackup.sources.postgres.fingerprint import (
    build_table_hash_query,
    column_choices,
    fingerprint_session,
    format_table_hash,
    row_hash_of,
)

POLL_S = 0.25
_CANDIDATES = """
SELECT c.oid, n.nspname, c.relname,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       coalesce(s.n_tup_ins, 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_COPYING = "SELECT relid FROM pg_stat_progress_copy WHERE datname = current_database()"


class EarlyHasher(threading.Thread):
    """Hash loaded tables of the database at ``dsn`` until :meth:`finish` is called.

    ``expected`` is the manifest's fingerprint (level ``full``).  After :meth:`finish`,
    ``verified`` holds the ``"schema.table"`` names whose rows and hash matched, and
    ``seconds`` the time spent hashing.  Errors end the early pass quietly: everything not
    verified is hashed after the restore anyway.
    """

    def __init__(self, dsn: str, password: str | None, expected: dict):
        super().__init__(name="drbackup-early-hash", daemon=True)
        self.dsn, self.password = dsn, password
        self.expected = {
            name: entry
            for name, entry in expected["tables"].items()
            if entry.get("kind") == "table" and entry["rows"] > 0 and entry.get("hash")
        }
        self.row_hash = row_hash_of(expected)
        self.verified: set[str] = set()
        self.tried: set[str] = set()
        self.seconds = 0.0
        self.error: str | None = None
        self._halt = threading.Event()

    def finish(self) -> set[str]:
        """Stop (after the table being hashed) and return the verified table names."""
        self._halt.set()
        self.join()
        return set(self.verified)

    def abandon(self) -> None:
        """Stop soon without waiting (the drill is being interrupted)."""
        self._halt.set()

    def run(self) -> None:
        try:
            conn = self._connect()
            if conn is None:
                return
            with conn:
                conn.execute("SET max_parallel_workers_per_gather = 0")
                while not self._halt.is_set() and len(self.tried) < len(self.expected):
                    self._pass(conn)
                    self._halt.wait(POLL_S)
        except psycopg.Error as exc:  # the early pass is an optimisation only
            self.error = " ".join(str(exc).split())[:200]

    def _connect(self):
        # The restore creates the database: wait for it (or for the end of the restore).
        kwargs = {"autocommit": True, "connect_timeout": 5}
        if self.password:
            kwargs["password"] = self.password
        while not self._halt.is_set():
            with contextlib.suppress(psycopg.OperationalError):
                return psycopg.connect(self.dsn, **kwargs)
            self._halt.wait(POLL_S)
        return None

    def _pass(self, conn) -> None:
        copying = self._copying(conn)
        for oid, schema, name, columns, inserted in conn.execute(_CANDIDATES).fetchall():
            key = f"{schema}.{name}"
            entry = self.expected.get(key)
            if entry is None or key in self.tried or inserted < entry["rows"]:
                continue
            if oid in copying or self._halt.is_set():
                continue
            self.tried.add(key)
            if self._hash(conn, schema, name, columns, column_choices(entry)) == (
                entry["rows"],
                entry["hash"],
            ):
                self.verified.add(key)

    def _copying(self, conn) -> set[int]:
        if conn.info.server_version < 140000:  # no pg_stat_progress_copy: rely on the count
            return set()
        return {r[0] for r in conn.execute(_COPYING).fetchall()}

    def _hash(self, conn, schema, name, columns, how: dict) -> tuple[int, str]:
        started = time.monotonic()
        try:
            with fingerprint_session(conn):
                query = build_table_hash_query(schema, name, columns, row_hash=self.row_hash, **how)
                rows, *sums = conn.execute(query).fetchone()
        finally:
            self.seconds += time.monotonic() - started
        return rows, format_table_hash(*sums)  # the fingerprint's own rendering
