"""The catalog: a SQL index of repositories, backups and runs, rebuildable from the repository.

The repository is the source of truth; the catalog only makes listing and reporting fast
without decrypting every manifest.  :meth:`Catalog.rebuild_from` makes the backups table
match a repository exactly, so deleting the catalog loses nothing the repository holds.
Two kinds of facts live only here (until drill reports are stored in the repository):

* the runs history (``record_run``, ``start_run``/``finish_run``, ``runs``);
* verification results (``mark_verified``: ``status``, ``last_verified_at``,
  ``verify_result``), which rebuilds keep but a deleted catalog forgets.

The catalog holds database names, server versions and row counts in clear (see
:func:`drbackup.catalog.summary.summarize`), unlike the repository, where they exist only in encrypted manifests.

Every public method is one short transaction; a :class:`Catalog` may be shared by threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from drbackup.catalog.engine import create_catalog_engine, first_line, parse_catalog_url
from drbackup.catalog.models import (
    MANIFEST_COLUMNS,
    RUN_FINISHED,
    RUN_RUNNING,
    SCHEMA_VERSION,
    STATUS_DAMAGED,
    STATUS_OK,
    BackupRecord,
    BackupRow,
    Base,
    CatalogInfoRow,
    RebuildResult,
    RepositoryRow,
    RunRecord,
    RunRow,
    as_utc,
)
from drbackup.catalog.summary import backup_values, read_repository
from drbackup.errors import ConfigError, DrbackupError, UsageError
from drbackup.repository.manifest import Manifest

REBUILD_HINT = "the catalog is only an index: move it aside and run 'drbackup catalog rebuild'"


class Catalog:
    """An opened catalog.  Create with :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=True)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Catalog:
        """Open (creating tables if missing) the catalog at ``url``.

        ``url`` is a SQLAlchemy URL (``sqlite:///path``, ``postgresql://...``, which is
        mapped to the psycopg 3 driver) or a plain file path, taken as a SQLite file whose
        parent directories are created.  Raises :class:`ConfigError` (one line, with a hint)
        for an unusable url, an unreachable server, a file that is not a catalog, or a
        catalog of another schema version.
        """
        sa_url = parse_catalog_url(url)
        catalog = cls(create_catalog_engine(sa_url))
        try:
            Base.metadata.create_all(catalog.engine)
            catalog._check_schema_version()
        except SQLAlchemyError as exc:
            catalog.close()
            raise ConfigError(
                f"cannot open catalog {catalog.url}: {first_line(exc)}",
                hint=REBUILD_HINT
                if sa_url.get_backend_name() == "sqlite"
                else "check catalog url, server and credentials",
            ) from None
        except ConfigError:
            catalog.close()
            raise
        return catalog

    def _check_schema_version(self) -> None:
        with self._sessions.begin() as session:
            row = session.get(CatalogInfoRow, "schema_version")
            if row is None:
                session.add(CatalogInfoRow(key="schema_version", value=str(SCHEMA_VERSION)))
            elif row.value != str(SCHEMA_VERSION):
                raise ConfigError(
                    f"catalog {self.url} has schema version {row.value}, "
                    f"this drbackup uses {SCHEMA_VERSION}",
                    hint=REBUILD_HINT,
                )

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite file of the catalog; None for PostgreSQL and an in-memory database."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return url.database

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise DrbackupError(
                f"catalog {self.url}: {first_line(exc)}", hint="check the catalog database"
            ) from exc

    # --- backups ------------------------------------------------------------------------

    def record_backup(self, repository_id: str, url: str, manifest: Manifest) -> BackupRecord:
        """Add or refresh the row of a committed backup; keeps its verification facts.

        Raises ValueError if the manifest belongs to another repository, IntegrityError if
        its timestamps do not parse.
        """
        if manifest.repository_id != repository_id:
            raise ValueError(
                f"manifest of repository {manifest.repository_id}, not {repository_id}"
            )
        values = backup_values(manifest)
        with self._transaction() as session:
            _upsert_repository(session, repository_id, url, synced=False)
            row = session.scalars(
                select(BackupRow).filter_by(
                    repository_id=repository_id,
                    target=manifest.target,
                    backup_id=manifest.backup_id,
                )
            ).one_or_none()
            if row is None:
                row = _add_backup(
                    session, repository_id, manifest.target, manifest.backup_id, values
                )
            else:
                _update(row, values)
            return _record(session, row)

    def list_backups(
        self, target: str | None = None, repository_id: str | None = None
    ) -> list[BackupRecord]:
        """Backups known to the catalog, oldest first (newest last)."""
        query = (
            select(BackupRow, RepositoryRow.url)
            .join(RepositoryRow, BackupRow.repository_id == RepositoryRow.id)
            .order_by(BackupRow.started_at, BackupRow.backup_id, BackupRow.target)
        )
        if target is not None:
            query = query.where(BackupRow.target == target)
        if repository_id is not None:
            query = query.where(BackupRow.repository_id == repository_id)
        with self._transaction() as session:
            return [BackupRecord.from_row(row, url) for row, url in session.execute(query)]

    def get_backup(self, backup_id: str, repository_id: str | None = None) -> BackupRecord | None:
        """The backup with this exact id, or None.  Raises UsageError if several match."""
        with self._transaction() as session:
            found = _find_backups(session, backup_id, repository_id)
            return _record(session, found[0]) if found else None

    def mark_verified(
        self,
        backup_id: str,
        ok: bool,
        problems: list[str],
        *,
        at: datetime | None = None,
        repository_id: str | None = None,
    ) -> BackupRecord:
        """Record a verification: status ``ok`` or ``damaged``, its time and its problems.

        Raises UsageError if the backup is not in the catalog (rebuild it first).
        """
        when = as_utc(at) if at is not None else datetime.now(UTC)
        with self._transaction() as session:
            found = _find_backups(session, backup_id, repository_id)
            if not found:
                raise UsageError(
                    f"backup {backup_id} is not in the catalog",
                    hint="run 'drbackup catalog rebuild'",
                )
            row = found[0]
            row.status = STATUS_OK if ok else STATUS_DAMAGED
            row.last_verified_at = when
            row.verify_result = [str(p) for p in problems]
            return _record(session, row)

    def forget_backup(self, backup_id: str, repository_id: str | None = None) -> bool:
        """Drop a backup's row (only the index: the backup stays in the repository and
        returns on the next rebuild).  Returns whether a row was removed."""
        with self._transaction() as session:
            found = _find_backups(session, backup_id, repository_id)
            for row in found:
                session.delete(row)
            return bool(found)

    def rebuild_from(self, repo) -> RebuildResult:
        """Make this repository's backup rows exactly what the repository holds.

        Adds missing backups, removes rows whose manifest is gone, updates rows that differ
        from their manifest (the repository wins), and keeps verification facts of rows
        that stay.  A manifest that fails authentication or parsing is listed in
        ``unreadable`` and its row, if any, is kept and marked damaged.  Manifests are read
        before the (single) transaction starts.

        The runs history is not rebuilt: it is not stored in the repository.  Raises what
        the repository raises for storage or key problems (EncryptionKeyError without a
        reading key).
        """
        loaded, unreadable = read_repository(repo)
        result = RebuildResult(unreadable=[f"{t}/{b}: {msg}" for (t, b), msg in unreadable.items()])
        with self._transaction() as session:
            _upsert_repository(session, repo.id, repo.url, synced=True)
            rows = session.scalars(select(BackupRow).filter_by(repository_id=repo.id))
            existing = {(row.target, row.backup_id): row for row in rows}
            for (target, backup_id), values in loaded.items():
                row = existing.get((target, backup_id))
                if row is None:
                    _add_backup(session, repo.id, target, backup_id, values)
                    result.added += 1
                elif _update(row, values):
                    result.updated += 1
                else:
                    result.unchanged += 1
            for key, row in existing.items():
                if key in unreadable:
                    row.status, row.verify_result = STATUS_DAMAGED, [unreadable[key]]
                elif key not in loaded:
                    session.delete(row)
                    result.removed += 1
        return result

    # --- runs ---------------------------------------------------------------------------

    def record_run(
        self,
        kind: str,
        target: str | None,
        started_at: datetime,
        finished_at: datetime,
        status: str,
        error: str | None = None,
        backup_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Record a finished run (``status`` ``ok`` or ``failed``); returns its id."""
        _check_finished_status(status)
        row = RunRow(
            kind=kind,
            target=target,
            started_at=as_utc(started_at),
            finished_at=as_utc(finished_at),
            status=status,
            error=error,
            backup_id=backup_id,
            details=details,
        )
        return self._add_run(row)

    def start_run(
        self,
        kind: str,
        target: str | None,
        started_at: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Record a run as ``running``; returns its id for :meth:`finish_run`."""
        row = RunRow(
            kind=kind,
            target=target,
            status=RUN_RUNNING,
            details=details,
            started_at=as_utc(started_at) if started_at else datetime.now(UTC),
        )
        return self._add_run(row)

    def _add_run(self, row: RunRow) -> int:
        with self._transaction() as session:
            session.add(row)
            session.flush()
            return row.id

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        error: str | None = None,
        backup_id: str | None = None,
        details: dict[str, Any] | None = None,
        finished_at: datetime | None = None,
    ) -> RunRecord:
        """Close a run started with :meth:`start_run`; ``details`` are merged into its own.

        Raises ValueError for a status other than ``ok``/``failed``, UsageError for an
        unknown run id.
        """
        _check_finished_status(status)
        with self._transaction() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                raise UsageError(f"no run {run_id} in the catalog")
            row.status, row.error = status, error
            row.finished_at = as_utc(finished_at) if finished_at else datetime.now(UTC)
            row.backup_id = backup_id if backup_id is not None else row.backup_id
            if details:
                row.details = {**(row.details or {}), **details}
            session.flush()
            return RunRecord.from_row(row)

    def runs(
        self,
        since: datetime | None = None,
        target: str | None = None,
        status: str | None = None,
        kind: str | None = None,
    ) -> list[RunRecord]:
        """Runs started at or after ``since``, filtered, oldest first."""
        query = select(RunRow).order_by(RunRow.started_at, RunRow.id)
        if since is not None:
            query = query.where(RunRow.started_at >= as_utc(since))
        filters = {"target": target, "status": status, "kind": kind}
        query = query.filter_by(**{k: v for k, v in filters.items() if v is not None})
        with self._transaction() as session:
            return [RunRecord.from_row(row) for row in session.scalars(query)]

    def count_runs(self, target: str | None = None) -> dict[str, int]:
        """How many runs (of ``target``) ended in each status, ever: counters for metrics.

        The daemon's job rows are left out: they summarise the same runs.
        """
        query = select(RunRow.status, func.count()).where(RunRow.kind != "job")
        if target is not None:
            query = query.where(RunRow.target == target)
        with self._transaction() as session:
            return dict(session.execute(query.group_by(RunRow.status)).all())


# --- rows -----------------------------------------------------------------------------------


def _upsert_repository(session: Session, repository_id: str, url: str, *, synced: bool) -> None:
    now = datetime.now(UTC)
    row = session.get(RepositoryRow, repository_id)
    if row is None:
        row = RepositoryRow(id=repository_id, url=url, first_seen=now)
        session.add(row)
    row.url = url  # the repository may have moved: its latest location wins
    if synced:
        row.last_synced = now
    session.flush()


def _add_backup(
    session: Session, repository_id: str, target: str, backup_id: str, values: dict[str, Any]
) -> BackupRow:
    row = BackupRow(repository_id=repository_id, target=target, backup_id=backup_id, **values)
    row.status = STATUS_OK
    session.add(row)
    return row


def _record(session: Session, row: BackupRow) -> BackupRecord:
    session.flush()
    return BackupRecord.from_row(row, session.get(RepositoryRow, row.repository_id).url)


def _find_backups(session: Session, backup_id: str, repository_id: str | None) -> list[BackupRow]:
    query = select(BackupRow).where(BackupRow.backup_id == backup_id)
    if repository_id is not None:
        query = query.where(BackupRow.repository_id == repository_id)
    found = list(session.scalars(query))
    if len(found) > 1:
        where = ", ".join(f"{r.target} in {r.repository_id[:12]}" for r in found)
        raise UsageError(
            f"backup id {backup_id} is in several places: {where}", hint="name the repository"
        )
    return found


def _update(row: BackupRow, values: dict[str, Any]) -> bool:
    """Set the manifest-derived columns that differ; returns whether any did."""
    changed = [name for name in MANIFEST_COLUMNS if getattr(row, name) != values[name]]
    for name in changed:
        setattr(row, name, values[name])
    return bool(changed)


def _check_finished_status(status: str) -> None:
    if status not in RUN_FINISHED:
        raise ValueError(
            f"a finished run's status is one of {', '.join(RUN_FINISHED)}, not {status!r}"
        )
