"""Where each postgres target of a drill restores, opened once per drill, removed after it.

Where a target restores, the first that applies:

1. the plan's ``scratch``: ``ephemeral: true`` (a private local cluster) or ``server: DSN``;
2. ``drill.scratch_dsn`` of the config (a scratch server);
3. ``drill.scratch_on_source_server: true``: the target's own server (an explicit opt-in:
   a full copy of the database lands on the production server);
4. a private local cluster, when PostgreSQL server binaries are found on this host;
5. else the drill is refused (ConfigError) with a line saying how to configure one.

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
from drbackup.drill.scratch import (
    EphemeralScratch,
    ScratchServer,
    default_base_dir,
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

    def describe(self, kept: bool) -> dict:
        return {"kind": self.kind, "server": self.server.shown, "kept": kept}


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
        self.ephemeral: EphemeralScratch | None = None
        self.kept: list[str] = []
        self.cleanup_failures: list[c.CheckResult] = []

    def __enter__(self) -> Scratches:
        return self

    def for_target(
        self, name: str, dsn: str, password: str | None, backup_server: int | None = None
    ) -> TargetScratch:
        """The scratch of target ``name`` (whose server is ``dsn``); see the module docstring.
        ``backup_server``: the backup's server_version_num (an ephemeral cluster must not be
        of an older major).

        Raises ConfigError when none is configured and no local cluster can be started.
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
            dropped = server.remove_leftovers()
            if dropped:
                self.notify(
                    f"removed leftover scratch databases of earlier drills: {', '.join(dropped)}"
                )
            self.servers[key] = TargetScratch(
                kind, server, password, with_globals, no_owner, self.drill_id
            )
        return self.servers[key]

    def _ephemeral(self, backup_server: int | None) -> TargetScratch:
        plan_scratch = self.plan.scratch
        if self.ephemeral is not None:  # one cluster per drill: it must fit every backup
            versions.require_cluster_for_backup(self.ephemeral.major, backup_server)
        else:
            bin_dir = versions.server_bin_dir_for_backup(backup_server)  # before any cleanup
            base = choose_base_dir(self.plan)
            removed = remove_stale_clusters(base)
            if removed:
                self.notify(f"removed leftover scratch clusters: {', '.join(map(str, removed))}")
            self.ephemeral = EphemeralScratch(
                base, self.drill_id, keep=self.plan.keep, bin_dir=bin_dir
            )
            self.notify(f"starting an ephemeral postgresql cluster in {self.ephemeral.directory}")
            self.ephemeral.start()
        with_globals = plan_scratch is None or plan_scratch.with_globals is not False
        no_owner = bool(plan_scratch and plan_scratch.no_owner)
        return self._server("ephemeral", self.ephemeral.cluster.dsn(), None, with_globals, no_owner)

    def __exit__(self, *exc) -> None:
        with signals_deferred():
            for scratch in self.servers.values():
                self._finish(scratch)
            if self.ephemeral is not None:
                self._finish_ephemeral()

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

    def _finish_ephemeral(self) -> None:
        try:
            self.ephemeral.finish()
        except Exception as exc:  # noqa: BLE001 - as above
            self._cleanup_failed(
                f"scratch cluster {self.ephemeral.directory} could not be removed: {exc}"
            )
        if self.plan.keep:
            self.kept.append(f"kept scratch cluster {self.ephemeral.directory} (server running)")

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
