"""Recording runs: every outcome of an action's run, and a failing catalog as a warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from drbackup.actions.runs import CatalogIndex, recorded_run
from drbackup.catalog import Catalog
from drbackup.errors import LockedError, SourceError


@pytest.fixture
def catalog(tmp_path: Path):
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        yield opened


@pytest.fixture
def warnings() -> list[str]:
    return []


def runs_of(catalog: Catalog) -> list[tuple]:
    return [(r.kind, r.target, r.status, r.error, r.backup_id) for r in catalog.runs()]


def test_a_run_that_ends_well_is_ok_with_what_it_made(catalog, warnings):
    index = CatalogIndex.of(catalog, warnings.append)
    with recorded_run(index, "backup", "app") as run:
        run.backup_id = "20261123T000000Z-aaaaaa"
        run.details = {"bytes": 10}
    assert runs_of(catalog) == [("backup", "app", "ok", None, "20261123T000000Z-aaaaaa")]
    (recorded,) = catalog.runs()
    assert recorded.details == {"bytes": 10} and recorded.finished_at >= recorded.started_at
    assert warnings == []


def test_a_problem_found_without_raising_fails_the_run(catalog, warnings):
    with recorded_run(CatalogIndex.of(catalog, warnings.append), "wal-check", "app") as run:
        run.problem = "missing segment 000000010000000000000003"
    assert runs_of(catalog) == [
        ("wal-check", "app", "failed", "missing segment 000000010000000000000003", None)
    ]


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (SourceError("pg_dump failed", redacted="pg_dump failed (redacted)"), "failed", None),
        (LockedError("another backup of target app is running"), "refused", None),
        (KeyboardInterrupt(), "interrupted", "interrupted (Ctrl-C or SIGTERM)"),
    ],
)
def test_a_run_that_raises_is_recorded_then_the_error_goes_on(
    catalog, warnings, raised, status, error
):
    with (
        pytest.raises(type(raised)),
        recorded_run(CatalogIndex.of(catalog, warnings.append), "backup", "app"),
    ):
        raise raised
    ((kind, target, recorded, text, _),) = runs_of(catalog)
    assert (kind, target, recorded) == ("backup", "app", status)
    # the shareable text: what may be stored and sent (never object keys)
    assert text == (error or getattr(raised, "redacted", None) or raised.message)


def test_a_dry_run_records_nothing(catalog, warnings):
    with recorded_run(CatalogIndex.of(catalog, warnings.append), "prune", "app", record=False):
        pass
    assert catalog.runs() == []


def test_a_failing_catalog_is_a_warning_said_once_never_the_runs_failure(tmp_path, warnings):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    index = CatalogIndex(lambda: Catalog.open(str(blocker / "catalog.db")), warnings.append)
    with recorded_run(index, "backup", "app") as run:
        run.backup_id = "20261123T000000Z-aaaaaa"
    assert index(lambda cat: cat.runs()) is None
    assert index.read(lambda cat: cat.runs()) is None
    assert warnings == [
        f"catalog not updated: cannot create the catalog directory {blocker}: not a directory"
    ]


def test_a_write_that_fails_in_the_catalog_is_named_in_the_warning(catalog, warnings):
    index = CatalogIndex.of(catalog, warnings.append)
    assert index(lambda cat: cat.finish_run(999, "ok")) is None
    assert warnings == ["catalog not updated: no run 999 in the catalog"]
    assert index(lambda cat: len(cat.runs())) == 0  # the catalog itself still works


def test_without_a_catalog_nothing_is_recorded_or_said(warnings):
    index = CatalogIndex.of(None, warnings.append)
    with recorded_run(index, "prune", "app"):
        pass
    assert warnings == []
