"""Where each postgres target of a drill restores, opened once per drill, removed after it.

Where a target restores, the first that applies:

1. the plan's ``scratch``: ``ephemeral: true`` (a private local cluster) or ``server: DSN``;
2. ``drill.scratch_dsn`` of the config (a scratch server);
3. ``drill.scratch_on_source_server: true``: the target's own server (an explicit opt-in:
   a full copy of the database lands on the production server);
4. a private local cluster, when PostgreSQL server binaries are found on this host;
5. else the drill is refused (ConfigError) with a line saying how to configure one.

A private cluster is of the backup's own major when its server is installed, else of the
nearest newer one, and of exactly the plan's ``into_major`` when set (versions.py); one per
major per drill.  A scratch server must be of ``into_major`` when it is set.

A drill never restores onto the server it backs up unless told to.  What it creates
(databases, a cluster) it marks (drill/scratch.py) and removes at the end -- after failures,
Ctrl-C and SIGTERM too -- unless the plan keeps it; leftovers of crashed drills are removed
when a scratch is first opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.drill import checks as c
from drbackup.drill.plan import DrillPlan
from drbackup.drill.record import Scratch
from drbackup.drill.scratch import (
    EphemeralScratch,
    ScratchServer,
    default_base_dir,
    new_drill_id,
    remove_stale_clusters,
    signals_deferred,
)
from drbackup.errors import ConfigError, DrbackupError, SourceError
from drbackup.sources.postgres import versions
from drbackup.sources.postgres.connection import dsn_for_database
from drbackup.sources.postgres.server_bin import find_pg_bin_dir

Notify = Callable[[str], None]
NO_SCRATCH_HINT = (
    "set drill.scratch_dsn to a server where drills may create databases, install the "
    "PostgreSQL server (initdb, postgres) here for a private cluster, or set "
    "drill.scratch_on_source_server: true to restore onto the target's own server"
)


@dataclass
class TargetScratch:
    """The scratch a target restores into, and how (globals, ownership).

    ``kind``: ``ephemeral``, ``server`` (a configured scratch server) or ``source`` (the
    target's own server, opted in).  ``created``: the databases this drill made there.
    """

    kind: str
    server: ScratchServer
    password: str | None
    with_globals: bool
    no_owner: bool
    drill_id: str
    major: int | None = None  # the scratch server's PostgreSQL major
    claimed: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.server.prefix

    def claim(self, name: str) -> None:
        if not self.server.claim(name):
            raise DrbackupError(f"scratch database {name} is held by another drill")
        self.claimed.append(name)

    def create(self, name: str, *, encoding: str | None) -> None:
        """Create and mark scratch database ``name``; raises SourceError if the server refuses."""
        with signals_deferred():  # Ctrl-C between CREATE and its marker would leave it unmarked
            self.server.create(name, self.drill_id, encoding=encoding)
            self.created.append(name)

    def describe(self, kept: bool) -> Scratch:
        return Scratch(self.kind, self.server.shown, kept, self.major)


def choose_base_dir(plan: DrillPlan) -> Path:
    scratch = plan.scratch
    return scratch.base_dir if scratch is not None and scratch.base_dir else default_base_dir()


class Scratches:
    """Opens each scratch once per drill, and removes what it made at exit (or keeps it)."""

    def __init__(self, settings, plan: DrillPlan, drill_id: str, notify: Notify):
        """``settings``: the config's ``drill`` section."""
        self.settings, self.plan, self.drill_id, self.notify = settings, plan, drill_id, notify
        self.prefix = settings.scratch_prefix
        self.servers: dict[str, TargetScratch] = {}
        self.ephemerals: dict[int, EphemeralScratch] = {}  # one private cluster per major
        self.kept: list[str] = []
        self.cleanup_failures: list[c.CheckResult] = []

    def __enter__(self) -> Scratches:
        return self

    def for_target(
        self, name: str, dsn: str, password: str | None, backup_server: int | None = None
    ) -> TargetScratch:
        """The scratch of target ``name`` (whose server is ``dsn``); see the module docstring.
        ``backup_server``: the backup's server_version_num (which major a private cluster
        runs).

        Raises ConfigError when none is configured and no local cluster can be started, or
        the scratch is of another major than the plan's ``into_major``.
        """
        plan_scratch = self.plan.scratch
        with_globals = bool(plan_scratch and plan_scratch.with_globals)
        no_owner = bool(plan_scratch and plan_scratch.no_owner)
        if plan_scratch is not None and plan_scratch.ephemeral:
            return self._ephemeral(backup_server)
        if plan_scratch is not None and plan_scratch.server:
            return self._server("server", plan_scratch.server, None, with_globals, no_owner)
        if self.settings.scratch_dsn:
            return self._server("server", self.settings.scratch_dsn, None, with_globals, no_owner)
        if self.settings.scratch_on_source_server:
            admin = dsn_for_database(dsn, "postgres")
            return self._server("source", admin, password, with_globals, no_owner)
        _require_server_binaries(name)
        return self._ephemeral(backup_server)

    def _server(self, kind, dsn, password, with_globals, no_owner) -> TargetScratch:
        key = f"{dsn}|{with_globals}|{no_owner}"
        if key not in self.servers:
            server = ScratchServer(dsn, password, self.prefix).open()
            major = versions.major_of(server.conn.info.server_version)
            if kind != "ephemeral":
                self._require_major(server, major)
            dropped = server.remove_leftovers()
            if dropped:
                self.notify(
                    f"removed leftover scratch databases of earlier drills: {', '.join(dropped)}"
                )
            self.servers[key] = TargetScratch(
                kind, server, password, with_globals, no_owner, self.drill_id, major
            )
        return self.servers[key]

    def _require_major(self, server: ScratchServer, major: int) -> None:
        wanted = self.plan.into_major
        if wanted is not None and major != wanted:
            server.close()
            raise ConfigError(
                f"scratch server {server.shown} is PostgreSQL {major}, and the drill restores "
                f"into PostgreSQL {wanted} (into_major)",
                hint=f"give a scratch server of PostgreSQL {wanted}, or drill into a private "
                "cluster (scratch: {ephemeral: true})",
            )

    def _ephemeral(self, backup_server: int | None) -> TargetScratch:
        plan_scratch = self.plan.scratch
        # before any cleanup or start: the binaries of the major this backup restores into
        major, bin_dir = versions.server_bin_dir_for_backup(backup_server, self.plan.into_major)
        backup_major = versions.major_of(backup_server) if backup_server else None
        if self.plan.into_major is None and backup_major is not None and major > backup_major:
            self.notify(
                f"the PostgreSQL {backup_major} server is not installed here: restoring into "
                f"PostgreSQL {major} (install {versions.server_package(backup_major)} to "
                "drill on the backup's own major)"
            )
        if major not in self.ephemerals:
            self._start_ephemeral(bin_dir, major)
        cluster = self.ephemerals[major].cluster
        with_globals = plan_scratch is None or plan_scratch.with_globals is not False
        no_owner = bool(plan_scratch and plan_scratch.no_owner)
        return self._server("ephemeral", cluster.dsn(), None, with_globals, no_owner)

    def _start_ephemeral(self, bin_dir: Path, major: int) -> None:
        base = choose_base_dir(self.plan)
        if not self.ephemerals:
            removed = remove_stale_clusters(base)
            if removed:
                self.notify(f"removed leftover scratch clusters: {', '.join(map(str, removed))}")
        # A cluster's directory is named by an id of its own: the drill's for the first,
        # a fresh one for each further major.
        cluster_id = new_drill_id() if self.ephemerals else self.drill_id
        ephemeral = EphemeralScratch(base, cluster_id, keep=self.plan.keep, bin_dir=bin_dir)
        self.ephemerals[major] = ephemeral  # before it starts: __exit__ removes what it made
        self.notify(
            f"starting an ephemeral postgresql cluster in {ephemeral.directory} "
            f"(PostgreSQL {major})"
        )
        ephemeral.start()

    def __exit__(self, *exc) -> None:
        with signals_deferred():
            for scratch in self.servers.values():
                self._finish(scratch)
            for ephemeral in self.ephemerals.values():
                self._finish_ephemeral(ephemeral)

    def _finish(self, scratch: TargetScratch) -> None:
        for name in scratch.claimed:
            try:
                if name in scratch.created:
                    self._drop_or_keep(scratch, name)
                scratch.server.release(name)
            except Exception as exc:  # noqa: BLE001 - reported as a failed check, never hidden
                message = exc.message if isinstance(exc, DrbackupError) else str(exc)
                self._cleanup_failed(f"scratch database {name} could not be removed: {message}")
        scratch.server.close()

    def _drop_or_keep(self, scratch: TargetScratch, name: str) -> None:
        if self.plan.keep:
            scratch.server.mark_kept(name, scratch.drill_id)
            self.kept.append(f"kept scratch database {name}: psql '{scratch.server.dsn(name)}'")
        else:
            scratch.server.drop(name, scratch.drill_id)

    def _finish_ephemeral(self, ephemeral: EphemeralScratch) -> None:
        try:
            ephemeral.finish()
        except Exception as exc:  # noqa: BLE001 - as above
            self._cleanup_failed(
                f"scratch cluster {ephemeral.directory} could not be removed: {exc}"
            )
        if self.plan.keep:
            self.kept.append(f"kept scratch cluster {ephemeral.directory} (server running)")

    def _cleanup_failed(self, message: str) -> None:
        hint = "remove it by hand, or run 'drbackup drill cleanup'"
        self.cleanup_failures.append(c.CheckResult("cleanup", c.FAIL, message, {"hint": hint}))


def _require_server_binaries(target: str) -> None:
    """Raise ConfigError (one line, how to configure a scratch) without server binaries."""
    try:
        find_pg_bin_dir()
    except SourceError:
        raise ConfigError(
            f"no scratch server for the drill of {target}: drill.scratch_dsn is not set and "
            "no postgresql server binaries were found here to start a private cluster",
            hint=NO_SCRATCH_HINT,
        ) from None
