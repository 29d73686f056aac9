"""Drills across PostgreSQL majors: a backup of one major restored into a newer one.

A dump restored into a newer major is the supported way to migrate ("restore to migrate"),
and ``into_major`` (``drill run --into-major N``) makes a drill an upgrade rehearsal: the
backup restored into PostgreSQL N, proved as any drill proves a restore, and timed.  What
changes across majors:

* row counts and content hashes are compared as within one major: the fingerprint's hash
  functions are the ones hash partitioning relies on, stable across majors, and the values
  hashed as text print alike (``tests/image/test_pg17.py`` proves both on the awkward
  fixture, 15 against 17);
* the schema inventory is compared after the rules of ``sources/postgres/upgrade.py``, and
  the differences they explain are named in the check's summary and evidence, never
  failures;
* foreign keys, sequences and amcheck run on the restored database as always (amcheck of
  the new major).
"""

from __future__ import annotations

from collections import Counter

from drbackup.drill import checks as c
from drbackup.sources.postgres import versions
from drbackup.sources.postgres.upgrade import (
    changed_view_definitions,
    explain_differences,
    reprint_view_definitions,
)


def backup_major(manifest) -> int | None:
    """The major of the server a backup was taken on (None if its manifest does not say)."""
    server = manifest.meta.get("server_version_num")
    return versions.major_of(server) if server else None


def restore_majors(manifest, restored_major: int | None, into_major: int | None) -> dict:
    """The report's ``postgresql`` entry of a target: which major the backup was taken on,
    which one it was restored into, and whether that was an upgrade (rehearsal)."""
    backup = backup_major(manifest)
    upgrade = None not in (backup, restored_major) and restored_major != backup
    return {
        "backup_major": backup,
        "restored_major": restored_major,
        "upgrade": upgrade,
        "rehearsal": into_major is not None,
    }


def check_schema_across_majors(
    conn, expected: dict | None, actual: dict | None, from_major: int, to_major: int
) -> c.CheckResult:
    """The schema check of a restore into another major (see the module docstring).

    The backup's view definitions that read differently are printed again by the restored
    server first (in a transaction rolled back), so that only a changed query differs.
    """
    if expected is None or actual is None:
        return c.check_schema(expected, actual)
    definitions = changed_view_definitions(expected["inventory"], actual["inventory"])
    reprinted = reprint_view_definitions(conn, definitions) if _any(definitions) else {}
    _left, explained, exp, act = explain_differences(
        expected["inventory"], actual["inventory"], from_major, to_major, reprinted
    )
    result = c.check_schema({**expected, "inventory": exp}, {**actual, "inventory": act})
    result.evidence["majors"] = {"backup": from_major, "restored": to_major}
    result.evidence["upgrade_differences"] = [e.to_dict() for e in explained[: c.EVIDENCE_LIMIT]]
    if explained:
        by_rule = Counter(e.rule.name for e in explained)
        named = ", ".join(f"{rule} {count}" for rule, count in sorted(by_rule.items()))
        result.summary += (
            f"; {len(explained)} difference{'' if len(explained) == 1 else 's'} "
            f"postgresql {to_major} introduces ({named})"
        )
    return result


def _any(definitions: dict) -> bool:
    return any(definitions.values())


def describe_majors(majors: dict | None, timings: dict) -> str | None:
    """The report line of a restore into another major, with its restore time."""
    if not majors or not majors.get("upgrade"):
        return None
    what = "upgrade rehearsal" if majors.get("rehearsal") else "restored into a newer major"
    return (
        f"{what}: postgresql {majors['backup_major']} -> {majors['restored_major']}, "
        f"restore {timings.get('restore_s', 0):.1f}s, "
        f"verification {timings.get('verification_s', 0):.1f}s"
    )
