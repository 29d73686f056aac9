"""Checks run concurrently lose no finding and give each to its own database.

Verification runs amcheck and the foreign keys (with the assertions) beside the content
hashing, each on a connection of its own, and the databases of a restored cluster a few at
a time (drill/beside.py, runner.py, physical_checks.verify_cluster).  Here three databases
of one real server are verified at once: one with an orphan row and an index amcheck finds
inconsistent (and a fingerprint to compare with), one clean but for a failing assertion, one
that does not exist.  Every failure must come back, once, tagged with its database, in the
report's fixed order.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from drbackup.drill.beside import BesideChecks
from drbackup.drill.checks import CheckResult
from drbackup.drill.physical_checks import verify_cluster
from drbackup.drill.plan import AmcheckPlan, Assertion, DrillPlan
from drbackup.drill.runner import DatabaseUnderTest
from drbackup.sources.postgres.fingerprint import take_fingerprint

SHOP_SQL = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL
);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) AS g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 20, g * 1.5 FROM generate_series(1, 200) AS g;
"""

# An order whose customer is gone: the restore broke the foreign key.
ORPHAN_SQL = """
SET session_replication_role = replica;
INSERT INTO orders (customer_id, total) VALUES (999, 1.0);
"""

# An expression index whose "immutable" function then changes: the index no longer holds
# what the heap's rows compute to, which bt_index_check with heapallindexed reports.
BAD_INDEX_SQL = """
CREATE FUNCTION shifted(i integer) RETURNS integer IMMUTABLE LANGUAGE plpgsql
    AS 'BEGIN RETURN i; END';
CREATE INDEX orders_shifted ON orders (shifted(id));
CREATE OR REPLACE FUNCTION shifted(i integer) RETURNS integer IMMUTABLE LANGUAGE plpgsql
    AS 'BEGIN RETURN i + 1000000; END';
"""


@pytest.fixture
def databases(pg_cluster):
    names = [f"test_conc_{uuid.uuid4().hex[:8]}_{n}" for n in ("broken", "clean")]
    for name in names:
        pg_cluster.create_database(name)
    yield names
    for name in names:
        pg_cluster.drop_database(name)


def _under_test(cluster, name: str, expected: dict | None) -> DatabaseUnderTest:
    return DatabaseUnderTest(
        target="app",
        database=name,
        scratch_database=name,
        dsn=cluster.dsn(name),
        password=None,
        expected=expected,
    )


def test_concurrent_checks_report_every_failure_for_its_own_database(pg_cluster, databases):
    broken, clean = databases
    for name in databases:
        pg_cluster.execute(SHOP_SQL, dbname=name)
    pg_cluster.execute(ORPHAN_SQL + BAD_INDEX_SQL, dbname=broken)
    with psycopg.connect(pg_cluster.dsn(broken), autocommit=True) as conn:
        expected = take_fingerprint(conn, "full")  # the broken state is the expected one
    missing = f"test_conc_{uuid.uuid4().hex[:8]}_missing"
    failing = Assertion(name="no big orders", sql="SELECT count(*) FROM orders", expect=0)
    plan = DrillPlan(targets=["app"], amcheck=AmcheckPlan(heapallindexed=True))

    verified, seconds = verify_cluster(
        [
            (_under_test(pg_cluster, broken, expected), []),
            (_under_test(pg_cluster, clean, None), [failing]),
            (_under_test(pg_cluster, missing, None), []),
        ],
        plan,
    )

    assert [{r.database for r in v.results} for v in verified] == [{broken}, {clean}, {missing}]
    assert seconds >= max(v.seconds for v in verified)
    mine = _by_name(verified[0].results)
    assert list(mine) == ["schema", "tables", "foreign_keys", "sequences", "amcheck"]
    assert {n: r.status for n, r in mine.items()} == {
        "schema": "pass",
        "tables": "pass",
        "foreign_keys": "fail",
        "sequences": "pass",
        "amcheck": "fail",
    }
    assert "orders_customer_id_fkey" in mine["foreign_keys"].summary
    assert "1 orphan rows" in mine["foreign_keys"].summary
    assert "orders_shifted" in mine["amcheck"].summary
    assert all(r.seconds > 0 for r in mine.values())
    theirs = _by_name(verified[1].results)
    assert list(theirs) == ["foreign_keys", "sequences", "assertion:no big orders", "amcheck"]
    assert {n: r.status for n, r in theirs.items()} == {
        "foreign_keys": "pass",
        "sequences": "pass",
        "assertion:no big orders": "fail",
        "amcheck": "pass",
    }
    (gone,) = verified[2].results
    assert (gone.name, gone.status) == ("verification", "fail")
    assert gone.summary.startswith(f"could not verify {missing}: ")


def test_a_group_that_cannot_connect_fails_its_checks_naming_the_database(pg_cluster):
    missing = f"test_conc_{uuid.uuid4().hex[:8]}_missing"
    ran = []
    group = BesideChecks(
        missing, pg_cluster.dsn(missing), None, ["foreign_keys", "assertion:a"], ran.append
    )
    results = group.results()
    assert ran == []
    assert [(r.name, r.status) for r in results] == [
        ("foreign_keys", "fail"),
        ("assertion:a", "fail"),
    ]
    assert all(r.summary.startswith(f"could not run on database {missing}: ") for r in results)


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    by_name = {r.name: r for r in results}
    assert len(by_name) == len(results), [r.name for r in results]  # none twice
    return by_name
