"""``restore postgres``: pick a backup, guard the target, stream into pg_restore.

Works with only the repository and the key: the backup is chosen from manifests, never
from the catalog.

The target is never destroyed before the backup is restored (docs/operations.md).  Into an
existing empty database, or one ``--create`` makes, the restore loads in place, the
database marked as a restore in progress until it succeeded.  ``--force`` over a non-empty
database loads a new database with a generated name, and only once pg_restore succeeded
swaps the names (in one transaction); the previous database is dropped after the swap, or
kept with ``keep_old``.  If the restore fails, the new database is dropped and the target
is as it was.  Every database statement is in ``sources/postgres/target.py``; the markers
and generated names in ``sources/postgres/restore_marker.py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from drbackup.actions.progress import SILENT, CountingReader, Progress
from drbackup.actions.selection import Selection, parse_time, select_backup  # noqa: F401
from drbackup.errors import (
    DrbackupError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreError,
    SourceError,
    StorageError,
    UsageError,
)
from drbackup.repository.manifest import Item, Manifest
from drbackup.sources.postgres import commands, versions
from drbackup.sources.postgres.connection import client_env, connect, database_of
from drbackup.sources.postgres.globals import GlobalsResult, apply_globals
from drbackup.sources.postgres.processes import tool_major
from drbackup.sources.postgres.restore import INCOMPLETE_HINT, RestoreRun, run_pg_restore
from drbackup.sources.postgres.restore_marker import (
    new_database_name,
    old_database_name,
    start_marker,
    user_comment,
)
from drbackup.sources.postgres.target import ADMIN_DATABASE, TargetServer, TargetState
from drbackup.threads import Background

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@dataclass
class RestoreResult:
    selection: Selection
    database: str
    into: str  # masked dsn
    run: RestoreRun
    globals: GlobalsResult | None
    created: bool = False  # the target database was created (--create)
    replaced: str | None = None  # what --force replaced, said to the user
    kept_old: str | None = None  # --keep-old: the name the previous database has now
    removed: list[str] = field(default_factory=list)  # leftovers of interrupted restores
    warnings: list[str] = field(default_factory=list)


def pick_item(manifest: Manifest, database: str | None) -> Item:
    dumps = [i for i in manifest.items if i.type == "pg_dump"]
    if database:
        for item in dumps:
            if item.name == database:
                return item
        raise UsageError(
            f"backup {manifest.backup_id} has no database {database}",
            hint="it has: " + ", ".join(i.name for i in dumps),
        )
    if len(dumps) != 1:
        raise UsageError(
            f"backup {manifest.backup_id} holds {len(dumps)} databases; choose one with --database",
            hint="it has: " + ", ".join(i.name for i in dumps),
        )
    return dumps[0]


def restore_postgres(
    app: AppContext,
    target: str,
    into: str,
    *,
    backup_id=None,
    point_in_time=None,
    database=None,
    jobs: int = 1,
    create: bool = False,
    force: bool = False,
    keep_old: bool = False,
    with_globals: bool = False,
    no_owner: bool = False,
    password: str | None = None,
    spool_dir: str | None = None,
    progress: Progress = SILENT,
) -> RestoreResult:
    """Restore one database of a backup into the database named by ``into``.

    Everything that can refuse the restore is checked before any data is read: the backup,
    the target database (exists, or ``create``; empty, or ``force``; no other restore into
    it) and the globals item.  With ``jobs`` > 1 the database is then prepared (created,
    marked, globals applied) while the archive is spooled; pg_restore starts once both are
    done.  ``force`` over a non-empty database restores into a new database and swaps it in
    only after pg_restore succeeded (see the module docstring); ``keep_old`` keeps the
    previous one under a generated name.  ``progress`` gets the archive's bytes as they
    are read from the repository (its total: the dump's size in the manifest).
    """
    dbname = database_of(into)
    if not dbname:
        raise UsageError("--into must name a database (e.g. postgresql://user@host/app_restored)")
    # The target is looked at while the passphrase is stretched and the backup chosen; the
    # backup's errors (wrong key, unknown id) still come first.
    repo = app.repository(background_key=True)
    opened = Background(lambda: _open_target(into, password), "drbackup-target-check")
    try:
        selection = _select_dump(repo, target, backup_id, point_in_time)
        item = pick_item(selection.manifest, database)
    except BaseException:
        with contextlib.suppress(BaseException):  # the backup's error is the one to report
            opened.result()[0].close()
        raise
    server, state = opened.result()
    with server:
        plan = _Plan(state, swap=_refuse(state, create=create, force=force), keep_old=keep_old)
        globals_item = _globals_item(selection.manifest) if with_globals else None
        bin_dir = _client_bin_dir(app, target, selection.manifest)
        removed = _remove_leftovers(server)
        marker = start_marker(dbname, f"{selection.manifest.target}/{selection.manifest.backup_id}")
        job = _Job(repo, item, globals_item, server, plan, marker, password, force)
        argv = job.argv(bin_dir, jobs=jobs, no_owner=no_owner)
        tolerated = partial(_harmless_errors, bin_dir, state.server_version)
        with _Shown(progress, f"restore {target}", item.size, jobs) as shown:
            run = job.load(argv, jobs, spool_dir, tolerated, shown)
        result = RestoreResult(selection, item.name, commands.mask_dsn(into), run, job.globals)
        result.created, result.removed = job.created, removed
        job.finish(result)
        return result


def _select_dump(repo, target: str, backup_id, point_in_time) -> Selection:
    selection = select_backup(
        repo, target, backup_id=backup_id, point_in_time=point_in_time, kind="postgres"
    )
    if selection.manifest.kind == "postgres-physical":
        raise UsageError(
            f"backup {selection.manifest.backup_id} is a base backup, not a dump",
            hint="restore it with --into-dir DIR (docs/pitr.md)",
        )
    return selection


def _open_target(into: str, password) -> tuple[TargetServer, TargetState]:
    server = TargetServer.open(into, password)
    try:
        return server, server.state()
    except BaseException:
        server.close()
        raise


def _client_bin_dir(app, target: str, manifest):
    """The pg_restore to run: the target's ``pg_bin_dir`` when the config has the target,
    else the newest installed; checked (before any database is created or marked) to be
    at least as new as the pg_dump that wrote the backup."""
    configured = getattr(app.config.postgres.get(target), "pg_bin_dir", None)
    bin_dir = commands.find_client_bin_dir(None, configured)
    if not (bin_dir / "pg_restore").is_file():
        raise SourceError(
            f"pg_restore not found in {bin_dir}",
            hint=f"install the PostgreSQL client tools, or set {commands.CLIENT_BIN_ENV} "
            "to the directory holding them",
        )
    dumped_by = manifest.meta.get("pg_dump_version")
    if dumped_by:
        versions.require_restore_client(tool_major(bin_dir, "pg_restore"), dumped_by)
    return bin_dir


def _harmless_errors(bin_dir, server_version: int) -> frozenset[str]:
    """What this pg_restore says into this server that changes nothing (versions.py)."""
    pg_restore_major = tool_major(bin_dir, "pg_restore")
    return versions.harmless_restore_errors(pg_restore_major, versions.major_of(server_version))


def _refuse(state: TargetState, *, create: bool, force: bool) -> bool:
    """Raise RestoreError if the restore may not go into ``state``; True if it must load a
    new database and swap it in (``force`` over a non-empty target)."""
    if not state.exists and not create:
        raise RestoreError(
            f"target database {state.name} does not exist", hint="add --create to create it"
        )
    if not state.objects:
        return False
    partial = state.partial
    if not force and partial is not None:
        raise RestoreError(
            f"target database {state.name} holds a partial restore by drbackup "
            f"({partial.describe()}) that did not finish",
            hint="restore again with --force to replace it (swapped in once the new restore "
            f'succeeded), or drop it: DROP DATABASE "{state.name}"',
        )
    if not force:
        raise RestoreError(
            f"target database {state.name} is not empty ({_objects(state.objects)})",
            hint="restore into an empty or new database (--create), or pass --force to "
            "replace it once the restore succeeded",
        )
    if state.name == ADMIN_DATABASE:
        raise RestoreError(
            f"--force cannot replace the {ADMIN_DATABASE} database: drbackup works from it",
            hint="restore into another database",
        )
    return True


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def _remove_leftovers(server: TargetServer) -> list[str]:
    """Drop what interrupted restores into this target left (holding its lock, no restore
    that made them runs); one line each, said to the user."""
    removed = []
    for leftover in server.leftovers():
        try:
            server.drop(leftover.name)
        except DrbackupError as exc:  # not ours to drop after all (another user's): say so
            removed.append(f"could not remove {leftover.describe()}: {exc.message}")
            continue
        removed.append(f"removed {leftover.describe()}, left by an interrupted restore")
    return removed


@dataclass(frozen=True)
class _Plan:
    state: TargetState
    swap: bool  # load a new database, swap it in after the restore succeeded
    keep_old: bool


class _Shown:
    """A restore's progress: the archive read from the repository (the phase), and a note
    of what pg_restore does once it reads nothing more (post-data; with --jobs, all of its
    work on the spooled copy)."""

    def __init__(self, progress: Progress, label: str, size: int, jobs: int):
        self.progress, self.label, self.jobs = progress, label, jobs
        self._phase = progress.phase(label, "read", size)

    def __enter__(self) -> _Shown:
        self.tick = self._phase.__enter__()
        return self

    def __exit__(self, *exc):
        return self._phase.__exit__(*exc)  # a failed restore ends the phase without its line

    def on_phase(self, name: str) -> None:
        """pg_restore's phases (sources/postgres/restore.py), in the calling thread."""
        jobs = f"pg_restore --jobs {self.jobs}"
        if name == "post_data":
            self.progress.note(self.label, "building indexes and constraints (post-data)")
        elif self.jobs > 1 and name == "pre_data":
            self.progress.note(self.label, f"{jobs}: creating the schema (pre-data)")
        elif self.jobs > 1 and name == "data":
            self.progress.note(self.label, f"{jobs}: loading data")


class _Job:
    """One restore's database work: prepare, load, then finish (swap, unmark) or undo."""

    def __init__(self, repo, item, globals_item, server, plan: _Plan, marker, password, force):
        self.repo, self.item, self.globals_item = repo, item, globals_item
        self.server, self.plan, self.password, self.force = server, plan, password, force
        name = plan.state.name
        # The comment the database had, put back when done (under an old marker: its own).
        self.previous_comment = user_comment(plan.state.comment)
        self.marker = marker.as_role("target", previous_comment=self.previous_comment)
        self.database = new_database_name(marker.restore_id) if plan.swap else name
        self.dsn = server.dsn(self.database)
        self.started = self.created = self.marked = False
        self.globals: GlobalsResult | None = None

    def argv(self, bin_dir, *, jobs: int, no_owner: bool) -> list[str]:
        """pg_restore into the database this job loads (spooled with ``jobs`` > 1)."""
        archive = "{archive}" if jobs > 1 else None
        return commands.pg_restore_argv(
            bin_dir, self.dsn, jobs=jobs, archive=archive, no_owner=no_owner
        )

    def prepare(self) -> None:
        """Create or mark the database to load, apply the globals; with jobs > 1 in a
        thread while the archive is spooled."""
        self.started = True
        state, encoding = self.plan.state, self.item.meta.get("encoding")
        if self.plan.swap:
            self.server.create(self.database, self.marker.as_role("new"), encoding=encoding)
        elif not state.exists:
            self.server.create(self.database, self.marker, encoding=encoding)
            self.created = self.marked = True
        else:
            self.marked = self.server.mark(self.database, self.marker)
        if self.globals_item is not None:
            self.globals = _restore_globals(self.repo, self.globals_item, self.dsn, self)
        with connect(self.dsn, self.password):  # pg_restore connects like this: fail here
            pass

    def load(self, argv: list[str], jobs: int, spool_dir, tolerated, shown) -> RestoreRun:
        name = self.plan.state.name
        try:
            with self.repo.open_item(self.item) as reader:
                return run_pg_restore(
                    argv,
                    client_env(self.password, self.dsn),
                    CountingReader(reader, shown.tick),
                    spool_dir=spool_dir,
                    what=f"restore of {self.item.name} into {name}",
                    alongside=self.prepare,
                    failed_hint=self._failed_hint(),
                    tolerated=tolerated,
                    on_phase=shown.on_phase,
                )
        except BaseException as exc:
            if isinstance(exc, DrbackupError):
                self._add_hint(exc, streamed=jobs == 1)
            self.undo(exc)
            raise

    def _failed_hint(self) -> str:
        if self.plan.swap:
            return f"{self._unchanged()}; fix the cause"
        return INCOMPLETE_HINT

    def _unchanged(self) -> str:
        return f"the target database {self.plan.state.name} was not changed"

    def _add_hint(self, exc: DrbackupError, *, streamed: bool) -> None:
        """Say what the target is now: unchanged (swap), or incomplete when pg_restore was
        loading a stream that stopped part-way; and, when the backup itself is damaged (an
        object failed authentication or is missing), that another backup is the way on."""
        damaged = isinstance(exc, IntegrityError | ObjectNotFoundError)
        notes = []
        if self.plan.swap:
            if self._unchanged() not in (exc.hint or ""):
                notes.append(self._unchanged())
        elif self.started and streamed and isinstance(exc, StorageError | IntegrityError):
            again = "an older backup (--backup ID)" if damaged else "again"
            name = self.plan.state.name
            notes.append(f"the target database {name} is incomplete: restore {again} with --force")
        if damaged:
            backup_id = self.marker.backup.split("/", 1)[-1]
            notes.append(
                f"backup {self.marker.backup} is damaged: 'drbackup verify {backup_id}' names "
                "what, 'drbackup list' shows the others"
            )
        if notes:
            exc.hint = "; ".join([*notes, exc.hint] if exc.hint else notes)

    def undo(self, exc: BaseException) -> None:
        """After a failure: drop the new database of a swap (the target was never touched).
        In place, the database keeps its marker: the next restore names it as partial."""
        if not (self.plan.swap and self.started):
            return
        try:
            self.server.drop_if_marked(self.database, self.marker)
        except DrbackupError as failed:
            if isinstance(exc, DrbackupError):
                left = (
                    f"the partial database {self.database} is left ({failed.message}); "
                    f"the next restore into {self.plan.state.name} removes it"
                )
                exc.hint = f"{exc.hint}; {left}" if exc.hint else left

    def finish(self, result: RestoreResult) -> None:
        """After pg_restore succeeded: swap the new database in, or clear the marker."""
        if self.plan.swap:
            self._swap(result)
        elif self.marked:
            self.server.set_comment(self.database, self.previous_comment)
        elif self.plan.state.exists:
            result.warnings.append(
                f"could not mark {self.database} as a restore in progress (only its owner "
                "may comment on it): an interrupted restore would not have been recognised"
            )

    def _swap(self, result: RestoreResult) -> None:
        state, name = self.plan.state, self.plan.state.name
        old = old_database_name(name, self.marker.restore_id)
        old_marker = self.marker.as_role("old", keep=self.plan.keep_old)
        try:
            ended = self.server.swap(
                self.database,
                old,
                target_comment=self.previous_comment,
                old_comment=old_marker.comment(),
            )
        except BaseException as exc:
            self.undo(exc)
            raise
        result.replaced = _replaced_text(state, ended)
        if self.plan.keep_old:
            result.kept_old = old
            return
        try:
            self.server.drop(old)
        except DrbackupError as exc:
            result.warnings.append(
                f"could not drop the previous database, now {old}: {exc.message} "
                "(the next restore into it drops it)"
            )


def _replaced_text(state: TargetState, ended: int) -> str:
    partial = state.partial
    what = (
        f"the partial restore in {state.name} ({partial.describe()})"
        if partial is not None
        else f"the existing database {state.name} ({_objects(state.objects)})"
    )
    text = f"replaced {what} after the restore succeeded"
    if ended:
        text += f" and ended its {ended} open session(s)"
    return text


def _globals_item(manifest: Manifest) -> Item:
    try:
        return manifest.item("globals")
    except KeyError:
        raise RestoreError(f"backup {manifest.backup_id} holds no globals") from None


def _restore_globals(repo, item: Item, dsn: str, job: _Job) -> GlobalsResult:
    with repo.open_item(item) as reader:
        text = b"".join(reader).decode("utf-8")
    with connect(dsn, job.password) as conn:
        return apply_globals(conn, text, force=job.force)
