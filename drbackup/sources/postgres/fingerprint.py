"""Integrity fingerprint of a PostgreSQL database: row counts, content hashes, inventory.

At backup time the fingerprint is taken on the connection whose REPEATABLE READ transaction
exported the snapshot that ``pg_dump --snapshot`` reads, so it describes exactly the data
in the dump.  A drill takes the same fingerprint of the restored database and compares:
identical data gives EQUAL fingerprints, and :func:`compare_fingerprints` names every
difference.

Which relations are hashed
    Ordinary tables and partition leaves (relkind ``r``) and populated materialized views
    (``m``), each read with ``FROM ONLY`` so an inheritance parent does not count its
    children's rows again.  Partitioned parents (``p``) hold no rows and are not hashed (their
    leaves are).  System schemas, temporary tables and tables owned by an extension are left
    out.  pg_dump does not dump a materialized view's rows: pg_restore REFRESHes it, so a view
    that was stale at backup time differs after a restore (reported as ``matview_content``).

Content hash (level ``full``)
    One pass per table sums a 64-bit hash of every row, modulo 2^64.  Addition is
    commutative, so the result does not depend on row order (no sort; the pass may run in
    parallel, and only the aggregate reaches Python); unlike XOR a duplicated row adds its hash
    twice instead of cancelling out.  A changed multiset keeps the sum with probability about
    2^-64 per table (this detects corruption and mistakes, not an adversary).  Columns are
    taken by name because pg_dump does not preserve the column order of inheritance children.
    Two row hashes exist; the fingerprint's ``settings.row_hash`` names the one it used, and
    a drill recomputes with that one (``like=``):

    ``record`` (PostgreSQL 14 and later, the default)
        ``hashtextextended(hash_record_extended(ROW(<columns by name>), 0)::text, 0)``: each
        value hashed in its binary form by its type's own hash function (the one hash
        indexes and hash partitions use, stable across major versions), no text rendering.
        The outer hash makes rows nonlinear: ``hash_record_extended`` alone is a weighted sum
        of its column hashes, and a sum of those would not see values swapped between rows.
        About five times cheaper than ``md5``; the cost of the pass is mostly the scan.  A
        column is hashed by value only if every type inside it (through domains, arrays,
        ranges, multiranges and composite types) is a built-in type whose hash depends on
        the value alone (:data:`VALUE_HASHED_TYPES`) and its collation is deterministic;
        other columns (enums and ``reg*`` types hash OIDs that a restore changes; extension
        types; types with no hash function such as ``json`` or ``point``) are hashed as
        ``::text``, under the fixed session settings.  So is ``numeric``: its hash follows
        equality (``1.0`` and ``1.00`` hash alike) while a restore must keep the scale, and
        its text is cheaper to hash than its normalisation.  ``float4`` and ``float8``
        columns (``float_columns``) are hashed by their exact IEEE 754 bits,
        ``float8send(...)``, with every NaN made the one NaN a restore produces: their hash
        functions would make ``0`` and ``-0`` alike, and their text costs a third more.
        The fingerprint records both lists per table.  What still hashes by equality:
        ``interval`` (``1 day`` and ``24:00:00``); and ``int8``, ``timestamp[tz]``,
        ``time`` and ``pg_lsn`` hash a 32-bit fold of their value (``hashint8extended``:
        low half XOR high half), so a change that keeps the fold is not seen (2^-32 for a
        random change; see docs/drills.md, Known limits).
    ``md5`` (servers older than 14, and fingerprints taken before the ``record`` scheme)
        ``md5(ROW(<columns by name>)::text)`` under fixed session settings (UTC, ISO dates,
        hex bytea, shortest-exact floats, empty search_path), first 64 bits.

Not covered
    Large objects are counted, not hashed; rows of extension configuration tables, owners,
    privileges and comments are not compared.  Sequence values may be ahead after a restore
    (sequences are not transactional; see :func:`compare_fingerprints`).

Session state
    Settings are applied with ``set_config(..., is_local => true)`` inside a savepoint (or a
    transaction of our own) that is rolled back at the end: the caller's connection and
    transaction are left exactly as they were.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from drbackup.errors import ConfigError, SourceError
from drbackup.sources.postgres.fingerprint_compare import (
    Difference,
    compare_fingerprints,
    compare_inventories,
    compare_tables,
)
from drbackup.sources.postgres.inventory import (
    Scope,
    collect_inventory,
    foreign_keys,
    orphan_query,
    sequence_checks,
    user_objects_filter,
)

__all__ = [  # taking a fingerprint here; comparing two in fingerprint_compare.py
    "FINGERPRINT_LEVELS",
    "Difference",
    "compare_fingerprints",
    "compare_inventories",
    "compare_tables",
    "foreign_keys",
    "orphan_query",
    "sequence_checks",
    "take_fingerprint",
    "take_inventory",
]

FINGERPRINT_LEVELS = ("off", "counts", "full")
FINGERPRINT_VERSION = 1

# Text forms of values must not depend on the server's or role's settings.  Any positive
# extra_float_digits gives shortest-exact (round-trip) floats on PostgreSQL >= 12, and 3 gives
# full precision on older servers; it is what pg_dump itself uses.
SESSION_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "search_path": "",
    "lc_monetary": "C",
    # Error out instead of silently hashing a row-level-security-filtered subset (as pg_dump).
    "row_security": "off",
    "statement_timeout": "0",
}
ROW_HASH_MD5 = "md5(row(columns by name)::text); sum of first 64 bits mod 2^64"
ROW_HASH_RECORD = (
    "hashtextextended(hash_record_extended(row(columns by name), 0)::text, 0); sum mod 2^64"
)
ROW_HASH_SCHEMES = (ROW_HASH_RECORD, ROW_HASH_MD5)
_RECORD_MIN_SERVER = 140000  # hash_record_extended

# Built-in types whose extended hash depends on the value alone (not on OIDs, locale or an
# extension's version) and tells apart values a restore must keep apart (not floats: -0).  Frozen for ROW_HASH_RECORD: a fingerprint records its text columns,
# so a later change here cannot make an old fingerprint mismatch.
VALUE_HASHED_TYPES = frozenset(
    [
        "bool",
        "bytea",
        "char",
        "name",
        "int2",
        "int4",
        "int8",
        "oid",
        "text",
        "varchar",
        "bpchar",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "jsonb",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "pg_lsn",
    ]
)

_SAVEPOINT_NAME = "drbackup_fingerprint"
_CONSISTENT_ISOLATION = ("repeatable read", "serializable")

_RELATIONS = f"""
SELECT n.nspname, c.relname, c.relkind::text,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT a.atttypid FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT coalesce(co.collisdeterministic, true) FROM pg_attribute a
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) AND c.relpersistence <> 't'
  AND {user_objects_filter("pg_class", "c.oid")}
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""


# ----------------------------------------------------------------------------- session


@contextmanager
def fingerprint_session(conn: psycopg.Connection) -> Iterator[None]:
    """Run the body with fixed text settings on a consistent snapshot, then undo everything.

    An open transaction must be REPEATABLE READ or SERIALIZABLE (its snapshot is the one
    described); the body runs in a savepoint rolled back at the end.  With no transaction
    open, a ``REPEATABLE READ, READ ONLY`` transaction is started and rolled back.
    Raises SourceError when the open transaction is failed or not snapshot-consistent.
    """
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise SourceError("cannot take a fingerprint: the connection's transaction has failed")
    own_transaction = status == TransactionStatus.IDLE
    with conn.transaction(
        savepoint_name=None if own_transaction else _SAVEPOINT_NAME, force_rollback=True
    ):
        if own_transaction:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        else:
            _require_consistent_isolation(conn)
        for name, value in SESSION_SETTINGS.items():
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        yield


def _require_consistent_isolation(conn: psycopg.Connection) -> None:
    (isolation,) = conn.execute("SHOW transaction_isolation").fetchone()
    if isolation not in _CONSISTENT_ISOLATION:
        raise SourceError(
            f"cannot take a fingerprint in a {isolation} transaction",
            hint="begin the transaction with ISOLATION LEVEL REPEATABLE READ",
        )


# ----------------------------------------------------------------------------- hashing


def build_table_hash_query(
    schema: str,
    table: str,
    columns: Iterable[str],
    *,
    row_hash: str = ROW_HASH_MD5,
    text_columns: Iterable[str] = (),
    float_columns: Iterable[str] = (),
) -> sql.Composed:
    """Return the one-pass query ``(rows, sum of row hashes)`` of a table.

    Columns are taken in name order (code point order) whatever their position, always
    qualified: with ``md5(t::text)`` a column named ``t`` would silently replace the row.
    ``row_hash`` is one of :data:`ROW_HASH_SCHEMES`; with :data:`ROW_HASH_RECORD`, the
    ``text_columns`` are hashed as ``::text`` and the ``float_columns`` by their bits (see
    the module docstring).
    """
    as_text, as_float = set(text_columns), set(float_columns)

    def field(name: str) -> sql.Composable:
        ref = sql.SQL("t.{}").format(sql.Identifier(name))
        if name in as_float:
            return sql.SQL(
                "float8send(CASE WHEN {c}::float8 = 'NaN'::float8 THEN 'NaN'::float8"
                " ELSE {c}::float8 END)"
            ).format(c=ref)
        return sql.SQL("{}::text").format(ref) if name in as_text else ref

    fields = sql.SQL(", ").join(field(c) for c in sorted(columns))
    if row_hash == ROW_HASH_RECORD:
        row = sql.SQL("hashtextextended(hash_record_extended(ROW({fields}), 0)::text, 0)")
    elif row_hash == ROW_HASH_MD5:
        row = sql.SQL("('x' || substr(md5(ROW({fields})::text), 1, 16))::bit(64)::bigint")
    else:
        raise SourceError(f"unknown row hash scheme {row_hash!r} (made by a newer drbackup?)")
    return sql.SQL(
        "SELECT count(*), coalesce(sum({row}), 0) FROM ONLY {schema}.{table} AS t"
    ).format(
        row=row.format(fields=fields), schema=sql.Identifier(schema), table=sql.Identifier(table)
    )


def build_row_count_query(schema: str, table: str) -> sql.Composed:
    """Return ``SELECT count(*) FROM ONLY schema.table``."""
    return sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )


def format_table_hash(hash_sum: int) -> str:
    """Render the sum of row hashes as 16 hex digits (modulo 2^64)."""
    return f"{int(hash_sum) % 2**64:016x}"


HASH_COLUMN_KEYS = ("text_columns", "float_columns")


def column_choices(entry: dict) -> dict[str, list[str]]:
    """How a fingerprint's table entry hashed its columns: the keyword arguments of
    :func:`build_table_hash_query` besides the scheme (empty lists for an ``md5`` entry)."""
    return {key: list(entry.get(key, ())) for key in HASH_COLUMN_KEYS}


def default_row_hash(conn: psycopg.Connection) -> str:
    """The row hash a new fingerprint of this server uses."""
    return ROW_HASH_RECORD if conn.info.server_version >= _RECORD_MIN_SERVER else ROW_HASH_MD5


def row_hash_of(fingerprint: dict) -> str:
    """The row hash scheme a fingerprint was taken with (``md5`` for those that predate it)."""
    return fingerprint.get("settings", {}).get("row_hash") or ROW_HASH_MD5


_TYPE_SQL = """
SELECT t.typtype::text, n.nspname = 'pg_catalog', t.typname::text, t.typcategory::text,
       t.typelem, t.typbasetype, t.typrelid,
       (SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid),
       (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid),
       array(SELECT a.atttypid FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = %s
"""
_NOT_ARRAYS = ("int2vector", "oidvector")
_FLOATS = ("float4", "float8")


class _ValueHashable:
    """Decides, per type OID and cached, whether :data:`ROW_HASH_RECORD` may hash a type by
    value: every type reached through domains, arrays, ranges, multiranges and composite
    types is in :data:`VALUE_HASHED_TYPES`."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn
        self._known: dict[int, bool] = {}
        self._rows: dict[int, tuple | None] = {}

    def _type(self, type_oid: int) -> tuple | None:
        """The catalog row of a type (``_TYPE_SQL``), read once."""
        if type_oid not in self._rows:
            self._rows[type_oid] = self._conn.execute(_TYPE_SQL, (type_oid,)).fetchone()
        return self._rows[type_oid]

    def is_float(self, type_oid: int) -> bool:
        """True for ``float4``, ``float8`` and domains over them."""
        row = self._type(type_oid)
        if row is None:
            return False
        typtype, builtin, name, _, _, base, *_ = row
        if typtype == "d":
            return self.is_float(base)
        return typtype == "b" and builtin and name in _FLOATS

    def __call__(self, type_oid: int) -> bool:
        if type_oid not in self._known:
            self._known[type_oid] = False  # a recursive composite is not hashed by value
            self._known[type_oid] = self._decide(type_oid)
        return self._known[type_oid]

    def _decide(self, type_oid: int) -> bool:
        row = self._type(type_oid)
        if row is None:
            return False
        typtype, builtin, name, category, elem, base, relid, subtype, multi_of, attrs = row
        if typtype == "d":
            return self(base)
        if typtype == "r":
            return subtype is not None and self(subtype)
        if typtype == "m":
            return multi_of is not None and self(multi_of)
        if typtype == "c":
            return all(self(a) for a in attrs)
        if category == "A" and elem and name not in _NOT_ARRAYS:
            return self(elem)
        return typtype == "b" and builtin and name in VALUE_HASHED_TYPES


def _fingerprint_table(
    conn, schema: str, table: str, columns: list[str], full: bool, row_hash: str, how: dict
) -> dict:
    try:
        if not full:
            (rows,) = conn.execute(build_row_count_query(schema, table)).fetchone()
            return {"rows": rows, "hash": None}
        query = build_table_hash_query(schema, table, columns, row_hash=row_hash, **how)
        rows, hash_sum = conn.execute(query).fetchone()
    except psycopg.Error as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceError(f"cannot fingerprint table {schema}.{table}: {reason}") from error
    entry = {"rows": rows, "hash": format_table_hash(hash_sum)}
    entry.update({k: sorted(v) for k, v in how.items() if v})
    return entry


def _fingerprint_tables(conn, scope: Scope, full: bool, row_hash: str, like: dict | None) -> dict:
    kinds = {"r": "table", "m": "matview"}
    hashable = _ValueHashable(conn)
    known = (like or {}).get("tables", {})
    tables = {}
    for schema, name, relkind, columns, types, deterministic in conn.execute(
        _relations_sql(conn)
    ).fetchall():
        if not scope.has_table(schema, name):
            continue
        key = f"{schema}.{name}"
        how = column_choices({})
        if full and row_hash == ROW_HASH_RECORD:
            if key in known:  # hash the way the expected fingerprint did
                how = column_choices(known[key])
            else:
                for column, type_oid, det in zip(columns, types, deterministic, strict=True):
                    if hashable.is_float(type_oid):
                        how["float_columns"].append(column)
                    elif not (det and hashable(type_oid)):
                        how["text_columns"].append(column)
        entry = _fingerprint_table(conn, schema, name, columns, full, row_hash, how)
        tables[key] = {**entry, "kind": kinds[relkind]}
    return dict(sorted(tables.items()))


def _relations_sql(conn: psycopg.Connection) -> str:
    if conn.info.server_version >= 120000:
        return _RELATIONS
    return _RELATIONS.replace("coalesce(co.collisdeterministic, true)", "true")


def _session_facts(conn: psycopg.Connection, row_hash: str) -> dict:
    version, encoding = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_encoding')"
    ).fetchone()
    return {
        **SESSION_SETTINGS,
        "server_version_num": version,
        "server_encoding": encoding,
        "row_hash": row_hash,
    }


def take_fingerprint(
    conn: psycopg.Connection,
    level: str = "full",
    *,
    include_schemas: Iterable[str] | None = None,
    exclude_schemas: Iterable[str] | None = None,
    include_tables: Iterable[str] | None = None,
    exclude_tables: Iterable[str] | None = None,
    like: dict | None = None,
) -> dict | None:
    """Fingerprint the database of ``conn`` as its current (or a new) snapshot sees it.

    ``level``: ``off`` returns None; ``counts`` row counts only (``hash`` is None); ``full``
    counts and content hashes.  Schemas are exact names; tables are exact ``"schema.table"``
    names; they mirror pg_dump's -n/-N/-t/-T (see :class:`Scope`).
    ``like``: a fingerprint to compare with later (a drill's expected one): its row hash
    scheme and per-table text columns are used, so equal data hashes equal; without it, the
    server's default scheme (:func:`default_row_hash`).
    Returns a JSON-serializable dict: ``version``, ``level``, ``tables`` (``"schema.table"`` ->
    ``{"rows", "hash", "kind"}``), ``inventory``, ``large_objects`` (None when out of scope),
    ``settings`` and ``elapsed_s``.
    Raises ConfigError for an unknown level, SourceError for an unusable transaction and
    psycopg errors from the server (e.g. a permission denied on a table).
    """
    if level not in FINGERPRINT_LEVELS:
        raise ConfigError(
            f"unknown fingerprint level {level!r}",
            hint=f"use one of: {', '.join(FINGERPRINT_LEVELS)}",
        )
    if level == "off":
        return None
    scope = Scope.build(include_schemas, exclude_schemas, include_tables, exclude_tables)
    started = time.monotonic()
    row_hash = row_hash_of(like) if like is not None else default_row_hash(conn)
    with fingerprint_session(conn):
        tables = _fingerprint_tables(conn, scope, level == "full", row_hash, like)
        inventory = collect_inventory(conn, scope)
        settings = _session_facts(conn, row_hash)
    return {
        "version": FINGERPRINT_VERSION,
        "level": level,
        "tables": tables,
        "inventory": inventory,
        "large_objects": inventory.pop("large_objects"),
        "settings": settings,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def take_inventory(conn: psycopg.Connection, **scope: Iterable[str] | None) -> dict:
    """Return the schema inventory of the database of ``conn`` (see ``inventory`` module).

    Keyword arguments are the scope filters of :func:`take_fingerprint`.
    """
    with fingerprint_session(conn):
        return collect_inventory(conn, Scope.build(**scope))
