"""How a run ended, and how it is recorded: the one way every action writes to the catalog.

``failed`` is for runs that went wrong; a run stopped from outside (Ctrl-C, SIGTERM, the
daemon cancelling it) is ``interrupted``, and one that declined to start because another
run held the target's lock is ``refused``: that is the lock doing its job, not a failure.

The catalog is an index (``drbackup catalog rebuild`` repairs it from the repository), so a
write to it never fails the run it records.  Every write goes through a :class:`CatalogIndex`,
which turns a catalog failure into a warning handed to its ``warn`` callback (the command
line prints them, the daemon logs them); :func:`recorded_run` records one run of an action
whichever way it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from drbackup.errors import DrbackupError, LockedError, shareable

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.catalog import Catalog
    from drbackup.repository.manifest import Manifest
    from drbackup.repository.repo import Repository

# catalog.models' RUN_* values, spelled here so that a backup does not import SQLAlchemy
# before its dump starts (the catalog is imported beside the dump: docs/architecture.md).
RUN_OK, RUN_FAILED, RUN_INTERRUPTED, RUN_REFUSED = "ok", "failed", "interrupted", "refused"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
NOT_UPDATED = "catalog not updated: "  # how the warning of a failed catalog write starts
NOT_READ = "catalog not read: "  # ... and of a failed read (the action goes on without it)

T = TypeVar("T")


def run_outcome(exc: BaseException) -> tuple[str, str]:
    """(status, error text) to record for a run that ended with ``exc``."""
    if isinstance(exc, LockedError):
        return RUN_REFUSED, shareable(exc)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, the daemon's Cancelled, SystemExit
        reason = str(exc)
        return RUN_INTERRUPTED, f"interrupted: {reason}" if reason else INTERRUPTED
    return RUN_FAILED, shareable(exc)  # no bucket object keys: the text is stored and sent


class CatalogIndex:
    """The catalog as actions write to it: best effort, each failure a warning.

    ``open_catalog`` returns the catalog (or None: nothing is recorded); it is called on
    each use, so an unusable catalog url is a warning too.  ``warn`` receives each distinct
    problem once.
    """

    def __init__(self, open_catalog: Callable[[], Catalog | None], warn: Callable[[str], None]):
        self._open = open_catalog
        self._warn = warn
        self._said: set[str] = set()

    @classmethod
    def of(cls, catalog: Catalog | None, warn: Callable[[str], None]) -> CatalogIndex:
        """An index over an opened catalog (or over none)."""
        return cls(lambda: catalog, warn)

    def __call__(self, write: Callable[[Catalog], T]) -> T | None:
        """``write(catalog)``'s result; None when it failed (warned) or there is no catalog."""
        return self._attempt(write, NOT_UPDATED)

    def read(self, query: Callable[[Catalog], T]) -> T | None:
        """``query(catalog)``'s result; None when it failed (warned) or there is no catalog."""
        return self._attempt(query, NOT_READ)

    def _attempt(self, use: Callable[[Catalog], T], failed: str) -> T | None:
        try:
            catalog = self._open()
            return None if catalog is None else use(catalog)
        except Exception as exc:  # noqa: BLE001 - the catalog is an index: a warning, never the run's failure
            reason = _reason(exc)
            if reason not in self._said:  # one catalog, one problem: said once
                self._said.add(reason)
                self._warn(failed + reason)
            return None

    def record_run(self, run: Run, status: str, error: str | None) -> None:
        """One finished run in the runs history."""
        self(
            lambda catalog: catalog.record_run(
                run.kind,
                run.target,
                run.started,
                datetime.now(UTC),
                status,
                error=error,
                backup_id=run.backup_id,
                details=run.details,
            )
        )

    def record_backup(self, repo: Repository, manifest: Manifest) -> None:
        """A committed backup of ``repo`` in the backups index."""
        self(lambda catalog: catalog.record_backup(repo.id, repo.url, manifest))


def _reason(exc: Exception) -> str:
    if isinstance(exc, DrbackupError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Run:
    """One run of an action, as it will be recorded; the action fills in what it learns."""

    kind: str
    target: str | None
    started: datetime
    backup_id: str | None = None
    details: dict[str, Any] | None = None
    problem: str | None = None  # a failure the action found without raising (a WAL gap)


@contextmanager
def recorded_run(
    index: CatalogIndex, kind: str, target: str | None, *, record: bool = True
) -> Iterator[Run]:
    """Record the run of the block: ``ok`` (``failed`` when it set ``problem``), or, when
    it raises, the outcome :func:`run_outcome` gives its exception (which propagates).

    ``record=False`` records nothing (a dry run).
    """
    run = Run(kind, target, datetime.now(UTC))
    try:
        yield run
    except BaseException as exc:
        if record:
            index.record_run(run, *run_outcome(exc))
        raise
    if record:
        index.record_run(run, RUN_FAILED if run.problem else RUN_OK, run.problem)


def recorded_backup(app: AppContext, target: str, take: Callable[[], Manifest]) -> Manifest:
    """Take a backup of ``target`` with ``take`` as a recorded ``backup`` run, and index the
    backup it made (a logical dump and a base backup are recorded alike)."""
    with recorded_run(app.index, "backup", target) as run:
        manifest = take()
        run.backup_id = manifest.backup_id
    app.index.record_backup(app.repository(), manifest)
    return manifest
