"""Schema inventory: a deterministic, comparable description of a database's objects.

The inventory keeps only what a ``pg_dump`` / ``pg_restore`` round trip preserves exactly, so
that the inventory of a restored copy equals the inventory of the source:

* no OIDs, owners, ACLs, tablespaces, storage or statistics settings, comments;
* columns are keyed by name, not position: pg_dump recreates an inheritance child with
  ``CREATE TABLE ... INHERITS``, which moves the inherited columns first;
* objects that belong to an extension (``pg_depend.deptype = 'e'``) are left out: they are
  recreated by ``CREATE EXTENSION`` and only the extension's version is compared;
* system schemas (``pg_catalog``, ``information_schema``, ``pg_toast*``, ``pg_temp*``) are
  left out.

Every query expects the session settings of :mod:`fingerprint` (``search_path = ''``), so
that expressions and type names come out schema-qualified.  Names in keys are joined with a
dot and NOT quoted: ``"<schema>.<table>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# A relation, type or function in a user schema that no extension owns.
_USER_NAMESPACE = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
_NOT_EXTENSION_MEMBER = """
    NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass
                AND e.objid = {oid} AND e.deptype = 'e')
"""


def user_objects_filter(catalog: str, oid: str) -> str:
    """SQL condition: namespace alias ``n`` is a user schema and ``oid`` (an object of system
    catalog ``catalog``) is not a member of an extension."""
    return _USER_NAMESPACE + " AND " + _NOT_EXTENSION_MEMBER.format(catalog=catalog, oid=oid)


@dataclass(frozen=True)
class Scope:
    """Which schemas and tables a fingerprint covers, mirroring pg_dump's -n/-N/-t/-T.

    Schemas are exact names; tables are exact ``"schema.table"`` names (no patterns).
    """

    include_schemas: frozenset[str] | None = None
    exclude_schemas: frozenset[str] = frozenset()
    include_tables: frozenset[str] | None = None
    exclude_tables: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, include_schemas=None, exclude_schemas=None, include_tables=None, exclude_tables=None
    ) -> Scope:
        """Make a scope from optional iterables of names."""
        return cls(
            frozenset(include_schemas) if include_schemas is not None else None,
            frozenset(exclude_schemas or ()),
            frozenset(include_tables) if include_tables is not None else None,
            frozenset(exclude_tables or ()),
        )

    def has_schema(self, schema: str) -> bool:
        if schema in self.exclude_schemas:
            return False
        return self.include_schemas is None or schema in self.include_schemas

    def has_table(self, schema: str, table: str) -> bool:
        name = f"{schema}.{table}"
        if not self.has_schema(schema) or name in self.exclude_tables:
            return False
        return self.include_tables is None or name in self.include_tables

    @property
    def whole_schemas(self) -> bool:
        """True when non-table objects are in scope (pg_dump -t dumps none of them)."""
        return self.include_tables is None

    @property
    def has_large_objects(self) -> bool:
        """pg_dump leaves large objects out when -n or -t selects what to dump."""
        return self.include_schemas is None and self.include_tables is None


_SCHEMAS = f"""
SELECT n.nspname FROM pg_namespace n
WHERE {user_objects_filter("pg_namespace", "n.oid")}
ORDER BY n.nspname COLLATE "C"
"""

_TABLES = f"""
SELECT n.nspname, c.relname, c.relkind::text, c.relpersistence::text,
       pg_get_expr(c.relpartbound, c.oid), pg_get_partkeydef(c.oid),
       array(SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
             WHERE i.inhrelid = c.oid ORDER BY i.inhseqno)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND {user_objects_filter("pg_class", "c.oid")}
"""

_COLUMNS = f"""
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), nullif(a.attgenerated::text, ''),
       nullif(a.attidentity::text, ''),
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND {user_objects_filter("pg_class", "c.oid")}
"""

_INDEXES = f"""
SELECT n.nspname, c.relname, i.relname, pg_get_indexdef(i.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't' AND {user_objects_filter("pg_class", "c.oid")}
"""

# Foreign keys carry what an orphan check needs: columns, the referenced table and the
# PK = FK equality operators (qualified, so a citext key compares with citext's operator).
_CONSTRAINTS = f"""
SELECT n.nspname, c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid), k.convalidated,
       k.conparentid <> 0,
       array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num ORDER BY u.ord),
       rn.nspname, r.relname,
       array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num ORDER BY u.ord),
       array(SELECT ARRAY[opn.nspname::text, op.oprname::text] FROM unnest(k.conpfeqop)
             WITH ORDINALITY u(opr, ord) JOIN pg_operator op ON op.oid = u.opr
             JOIN pg_namespace opn ON opn.oid = op.oprnamespace ORDER BY u.ord),
       k.confmatchtype::text
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = k.confrelid LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.conrelid <> 0 AND c.relpersistence <> 't' AND {user_objects_filter("pg_class", "c.oid")}
"""

_TRIGGERS = f"""
SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid)
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT g.tgisinternal AND c.relpersistence <> 't' AND {user_objects_filter("pg_class", "c.oid")}
"""

_SEQUENCES = f"""
SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
       (SELECT ARRAY[tn.nspname, t.relname, a.attname::text] FROM pg_depend d
        JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relpersistence <> 't' AND {user_objects_filter("pg_class", "c.oid")}
"""

_VIEWS = f"""
SELECT n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid), c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {user_objects_filter("pg_class", "c.oid")}
"""

# Functions created implicitly with a range type (constructors) depend on it with deptype 'i'.
_FUNCTIONS = f"""
SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind::text,
       CASE WHEN p.prokind <> 'a' THEN md5(pg_get_functiondef(p.oid)) END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {user_objects_filter("pg_proc", "p.oid")}
  AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass
                  AND i.objid = p.oid AND i.deptype = 'i')
"""

_EXTENSIONS = "SELECT x.extname, x.extversion FROM pg_extension x"

# Enum, domain, range and free-standing composite types; array and multirange types are
# implicit companions of these and are left out.
_TYPES = f"""
SELECT n.nspname, t.typname, t.typtype::text,
       array(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull, t.typdefault,
       array(SELECT k.conname || ': ' || pg_get_constraintdef(k.oid) FROM pg_constraint k
             WHERE k.contypid = t.oid ORDER BY k.conname COLLATE "C"),
       array(SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class tc ON tc.oid = t.typrelid
WHERE t.typtype IN ('e', 'd', 'r', 'c') AND (t.typtype <> 'c' OR tc.relkind = 'c')
  AND {user_objects_filter("pg_type", "t.oid")}
"""

_LARGE_OBJECTS = "SELECT count(*) FROM pg_largeobject_metadata"


def _rows(conn: psycopg.Connection, query: str) -> list[tuple]:
    return conn.execute(query).fetchall()


def _nested_put(target: dict, outer: str, inner: str, value: Any) -> None:
    target.setdefault(outer, {})[inner] = value


def _sorted(mapping: dict) -> dict:
    """Sort a dict and the dicts nested in it by key, so JSON output is stable."""
    return {k: _sorted(v) if isinstance(v, dict) else v for k, v in sorted(mapping.items())}


_TABLE_KINDS = {"r": "table", "p": "partitioned table"}
_COLUMN_FIELDS = ("type", "not_null", "default", "generated", "identity", "collation")


def _collect_tables(conn, scope: Scope) -> dict:
    tables: dict[str, dict] = {}
    for schema, name, kind, persistence, bound, partkey, parents in _rows(conn, _TABLES):
        if scope.has_table(schema, name):
            tables[f"{schema}.{name}"] = dict(
                kind=_TABLE_KINDS[kind],
                unlogged=persistence == "u",
                partition_bound=bound,
                partition_key=partkey,
                inherits=parents,
                columns={},
            )
    for schema, name, column, *fields in _rows(conn, _COLUMNS):
        table = tables.get(f"{schema}.{name}")
        if table is not None:
            table["columns"][column] = dict(zip(_COLUMN_FIELDS, fields, strict=True))
    return tables


_FK_FIELDS = ("columns", "ref_schema", "ref_table", "ref_columns", "operators", "match")


def _collect_table_objects(conn, scope: Scope) -> dict:
    """Indexes, constraints and triggers, each as ``"schema.table" -> name -> definition``."""
    out: dict[str, dict] = {"indexes": {}, "constraints": {}, "triggers": {}}
    for schema, table, name, definition in _rows(conn, _INDEXES):
        if scope.has_table(schema, table):
            _nested_put(out["indexes"], f"{schema}.{table}", name, definition)
    for schema, table, name, definition in _rows(conn, _TRIGGERS):
        if scope.has_table(schema, table):
            _nested_put(out["triggers"], f"{schema}.{table}", name, definition)
    for row in _rows(conn, _CONSTRAINTS):
        schema, table, name, ctype, definition, validated, inherited = row[:7]
        if not scope.has_table(schema, table):
            continue
        entry = dict(type=ctype, definition=definition, validated=validated, inherited=inherited)
        if ctype == "f":
            entry.update(schema=schema, table=table, **dict(zip(_FK_FIELDS, row[7:], strict=True)))
        _nested_put(out["constraints"], f"{schema}.{table}", name, entry)
    return out


def read_sequence_state(conn, schema: str, name: str) -> tuple[int, bool]:
    """Return ``(last_value, is_called)`` of one sequence (not transactional: read now)."""
    query = sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(name)
    )
    last_value, is_called = conn.execute(query).fetchone()
    return int(last_value), bool(is_called)


_SEQUENCE_FIELDS = ("type", "start", "increment", "min", "max", "cache", "cycle")


def _collect_sequences(conn, scope: Scope) -> dict:
    sequences = {}
    for schema, name, *fields, owner in _rows(conn, _SEQUENCES):
        # pg_dump -t dumps the sequences owned by a selected table along with it.
        if not (scope.has_table(schema, name) or owner and scope.has_table(*owner[:2])):
            continue
        last_value, is_called = read_sequence_state(conn, schema, name)
        sequences[f"{schema}.{name}"] = {
            **dict(zip(_SEQUENCE_FIELDS, fields, strict=True)),
            "owned_by": ".".join(owner) if owner else None,
            "last_value": last_value,
            "is_called": is_called,
        }
    return sequences


def _collect_views(conn, scope: Scope) -> tuple[dict, dict]:
    views, matviews = {}, {}
    for schema, name, kind, definition, populated in _rows(conn, _VIEWS):
        if not scope.has_table(schema, name):
            continue
        if kind == "v":
            views[f"{schema}.{name}"] = definition
        else:
            matviews[f"{schema}.{name}"] = {"definition": definition, "populated": populated}
    return views, matviews


def _collect_functions(conn, scope: Scope) -> dict:
    functions = {}
    for schema, name, args, kind, digest in _rows(conn, _FUNCTIONS):
        if scope.has_schema(schema):
            functions[f"{schema}.{name}({args})"] = digest if kind != "a" else "aggregate"
    return functions


def _collect_types(conn, scope: Scope) -> dict:
    types = {}
    kinds = {"e": "enum", "d": "domain", "r": "range", "c": "composite"}
    for schema, name, kind, labels, base, notnull, default, checks, attrs, subtype in _rows(
        conn, _TYPES
    ):
        if not scope.has_schema(schema):
            continue
        entry: dict[str, Any] = {"kind": kinds[kind]}
        if kind == "e":
            entry["labels"] = labels
        elif kind == "d":
            entry.update(base=base, not_null=notnull, default=default, checks=checks)
        elif kind == "c":
            entry["attributes"] = attrs
        else:
            entry["subtype"] = subtype
        types[f"{schema}.{name}"] = entry
    return types


def collect_inventory(conn: psycopg.Connection, scope: Scope) -> dict:
    """Read the inventory of the database ``conn`` is connected to.

    Expects the fingerprint session settings to be in effect (see ``fingerprint``).
    Returns a dict of sorted dicts; categories that ``scope`` excludes (pg_dump -t dumps no
    schemas, functions, types or extensions; -n no extensions) are omitted, and
    ``large_objects`` is None when pg_dump would not dump large objects.
    """
    inventory: dict[str, Any] = {"tables": _collect_tables(conn, scope)}
    inventory.update(_collect_table_objects(conn, scope))
    inventory["sequences"] = _collect_sequences(conn, scope)
    inventory["views"], inventory["matviews"] = _collect_views(conn, scope)
    if scope.whole_schemas:
        inventory["schemas"] = [s for (s,) in _rows(conn, _SCHEMAS) if scope.has_schema(s)]
        inventory["functions"] = _collect_functions(conn, scope)
        inventory["types"] = _collect_types(conn, scope)
    if scope.whole_schemas and scope.include_schemas is None:
        inventory["extensions"] = dict(_rows(conn, _EXTENSIONS))
    inventory["large_objects"] = (
        _rows(conn, _LARGE_OBJECTS)[0][0] if scope.has_large_objects else None
    )
    return _sorted(inventory)


# ----------------------------------------------------------------------------- drill helpers

_OWNED_SEQUENCES = f"""
SELECT sn.nspname, s.relname, n.nspname, t.relname, a.attname::text, q.seqincrement
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence q ON q.seqrelid = s.oid
JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i') AND t.relkind IN ('r', 'p') AND t.relpersistence <> 't'
  AND {user_objects_filter("pg_class", "t.oid")}
ORDER BY sn.nspname COLLATE "C", s.relname COLLATE "C"
"""


def foreign_keys(inventory: dict) -> list[dict]:
    """List the foreign keys of an inventory, one dict per key, ready for :func:`orphan_query`.

    Keys cloned onto partitions are skipped: the key on the partitioned parent covers them.
    Each dict: ``name``, ``schema``, ``table``, ``columns``, ``ref_schema``, ``ref_table``,
    ``ref_columns``, ``operators`` (``[schema, name]`` pairs, PK = FK), ``match`` (``s``
    simple, ``f`` full), ``validated``, and ``only`` / ``ref_only``: read the table without
    its inheritance children (true for an ordinary table; false when partitioned, or for a
    referenced table outside the inventory, whose kind is unknown).
    """
    tables = inventory.get("tables", {})
    keys = []
    for table_key, constraints in sorted(inventory.get("constraints", {}).items()):
        for name, con in sorted(constraints.items()):
            if con["type"] != "f" or con["inherited"]:
                continue
            ref_kind = tables.get(f"{con['ref_schema']}.{con['ref_table']}", {}).get("kind")
            fk = {key: con[key] for key in ("schema", "table", *_FK_FIELDS, "validated")}
            fk.update(name=name, only=tables.get(table_key, {}).get("kind") == "table")
            keys.append({**fk, "ref_only": ref_kind == "table"})
    return keys


def _relation(schema: str, table: str, only: bool) -> sql.Composed:
    return sql.SQL("{only}{schema}.{table}").format(
        only=sql.SQL("ONLY " if only else ""),
        schema=sql.Identifier(schema),
        table=sql.Identifier(table),
    )


def orphan_query(fk: dict) -> sql.Composed:
    """Build ``SELECT count(*)`` of the child rows of ``fk`` whose parent row is missing.

    ``fk`` is a dict from :func:`foreign_keys`.  MATCH SIMPLE (``match`` ``s``): rows with a
    NULL in any key column are skipped.  MATCH FULL (``f``): only all-NULL rows are skipped, a
    partly NULL key counts as an orphan.  Keys compare with the constraint's own equality
    operators, schema-qualified, so the query means the same under any search_path.
    """
    child = [sql.SQL("c.{}").format(sql.Identifier(col)) for col in fk["columns"]]
    parent = [sql.SQL("p.{}").format(sql.Identifier(col)) for col in fk["ref_columns"]]
    joins = sql.SQL(" AND ").join(
        sql.SQL("{} OPERATOR({}.{}) {}").format(p, sql.Identifier(op[0]), sql.SQL(op[1]), c)
        for p, c, op in zip(parent, child, fk["operators"], strict=True)
    )
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child)
    if fk.get("match") == "f":
        all_null = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in child)
        skip = sql.SQL("NOT ({})").format(all_null)
    else:
        skip = not_null
    return sql.SQL(
        "SELECT count(*) AS orphans FROM {child} AS c WHERE {skip}"
        " AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {joins})"
    ).format(
        child=_relation(fk["schema"], fk["table"], fk["only"]),
        skip=skip,
        parent=_relation(fk["ref_schema"], fk["ref_table"], fk["ref_only"]),
        joins=joins,
    )


def _column_extreme(conn, schema: str, table: str, column: str, use_max: bool) -> int | None:
    query = sql.SQL("SELECT {func}(t.{column}) FROM {schema}.{table} AS t").format(
        func=sql.SQL("max" if use_max else "min"),
        column=sql.Identifier(column),
        schema=sql.Identifier(schema),
        table=sql.Identifier(table),
    )
    (value,) = conn.execute(query).fetchone()
    return None if value is None else int(value)


def sequence_checks(conn: psycopg.Connection) -> list[dict]:
    """Compare every sequence owned by a column (serial, identity) with the column's values.

    Returns one dict per sequence: ``sequence``, ``column`` (``"schema.table.column"``),
    ``next_value`` (what nextval would return), ``max_value`` (max of the column, or min
    for a descending sequence; None when the table is empty) and ``behind``: true when the
    next value is already used, so the next insert would collide.
    """
    checks = []
    for seq_schema, seq, schema, table, column, increment in _rows(conn, _OWNED_SEQUENCES):
        last_value, is_called = read_sequence_state(conn, seq_schema, seq)
        next_value = last_value + increment if is_called else last_value
        extreme = _column_extreme(conn, schema, table, column, use_max=increment > 0)
        behind = extreme is not None and (next_value - extreme) * increment <= 0
        checks.append(
            dict(
                sequence=f"{seq_schema}.{seq}",
                column=f"{schema}.{table}.{column}",
                next_value=next_value,
                max_value=extreme,
                behind=behind,
            )
        )
    return checks
