"""The daemon's source heartbeats: an interval job per postgres target with
``heartbeat: true`` writing a row into ``drbackup.heartbeat`` on its server
(actions/heartbeat.py), for physical drills.  Not the dead-man's-switch pings of jobs
(scheduler/heartbeat.py).  A failed heartbeat is a warning event, never a run: the next
one tries again."""

from __future__ import annotations

import logging

from drbackup.errors import DrbackupError

JOB_PREFIX = "source-heartbeat:"


def install_heartbeats(scheduler, app, emit) -> list[str]:
    """Add one interval job per target with heartbeats; returns the targets."""
    names = [n for n, cfg in app.config.postgres.items() if cfg.heartbeat]
    for name in names:
        interval = app.config.postgres[name].heartbeat_interval.total_seconds()
        scheduler.add_job(
            _beat,
            "interval",
            seconds=interval,
            args=[app, name, emit],
            id=JOB_PREFIX + name,
            name=JOB_PREFIX + name,
        )
        emit("source_heartbeat_scheduled", target=name, interval_s=interval)
    return names


def _beat(app, name: str, emit) -> None:
    from drbackup.actions.heartbeat import write_heartbeat

    try:
        write_heartbeat(app, name)
    except DrbackupError as exc:
        emit("source_heartbeat_failed", logging.WARNING, target=name, error=exc.message)
