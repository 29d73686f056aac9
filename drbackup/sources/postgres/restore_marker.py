"""The marker a restore sets on the databases it works on, and the names it generates.

A restore marks every database it changes with a database comment (``COMMENT ON
DATABASE``): :data:`MARKER_PREFIX` followed by the JSON of a :class:`RestoreMarker`.  The
marker says which restore it is (id, backup, start, host and pid) and what the database is
to that restore (``role``):

``target``
    the target database itself, while a restore loads it in place (an existing empty
    database, or one created by ``--create``).  Cleared when the restore succeeds; left when
    it fails or is killed, so the next restore names the database as a partial restore.
``new``
    the database a ``--force`` restore loads, named ``drbackup_restore_<restore id>``
    (:func:`new_database_name`); renamed to the target's name once the restore succeeded.
``old``
    the previous target after that swap, named ``<target>_replaced_<restore id>``
    (:func:`old_database_name`); dropped right after the swap unless ``keep``
    (``--keep-old``).

A database is drbackup's to drop only when both agree: its exact generated name and a
marker of that role and restore id (:func:`is_leftover`).  pg_restore without ``--create``
never restores a database comment, so a marker cannot come from a dump.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime

MARKER_PREFIX = "drbackup restore marker: "
ROLES = ("target", "new", "old")
MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1
NEW_PREFIX = "drbackup_restore_"
OLD_INFIX = "_replaced_"
_RESTORE_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


@dataclass(frozen=True)
class RestoreMarker:
    role: str  # one of ROLES
    restore_id: str  # new_restore_id()
    target: str  # the name of the target database
    backup: str  # "<target>/<backup id>" of the backup being restored
    started: str  # ISO 8601, UTC
    host: str
    pid: int
    previous_comment: str | None = None  # the database's own comment, put back when done
    keep: bool = False  # role "old": kept on purpose (--keep-old)

    def comment(self) -> str:
        """The text of the database comment that carries this marker."""
        return MARKER_PREFIX + json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    def as_role(self, role: str, **changes) -> RestoreMarker:
        return replace(self, role=role, **changes)

    def describe(self) -> str:
        """``backup app/…, started 2026-… by pid 4711 on host``: said to the user."""
        return f"backup {self.backup}, started {self.started} by pid {self.pid} on {self.host}"


def new_restore_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<6 hex>``: the UTC start time and randomness."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def start_marker(target: str, backup: str, now: datetime | None = None) -> RestoreMarker:
    """The marker of a restore starting now in this process (role ``target``)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return RestoreMarker(
        role="target",
        restore_id=new_restore_id(now),
        target=target,
        backup=backup,
        started=now.isoformat(timespec="seconds"),
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def parse_marker(comment: str | None) -> RestoreMarker | None:
    """The marker in a database comment, or None when the comment is not one of ours."""
    if not comment or not comment.startswith(MARKER_PREFIX):
        return None
    try:
        data = json.loads(comment[len(MARKER_PREFIX) :])
        marker = RestoreMarker(**{f.name: data[f.name] for f in fields(RestoreMarker)})
    except (ValueError, KeyError, TypeError):
        return None
    if marker.role not in ROLES or not _RESTORE_ID_RE.match(str(marker.restore_id)):
        return None
    return marker


def user_comment(comment: str | None) -> str | None:
    """The comment a user gave the database: under a marker, the one it keeps."""
    marker = parse_marker(comment)
    return comment if marker is None else marker.previous_comment


def _id_part(restore_id: str) -> str:
    return restore_id.lower().replace("-", "_")


def new_database_name(restore_id: str) -> str:
    """``drbackup_restore_<restore id>``: where a ``--force`` restore loads the backup."""
    return NEW_PREFIX + _id_part(restore_id)


def old_database_name(target: str, restore_id: str) -> str:
    """``<target>_replaced_<restore id>``, the target's part shortened to fit 63 bytes."""
    tail = OLD_INFIX + _id_part(restore_id)
    room = MAX_IDENTIFIER - len(tail.encode())
    head = target.encode()[:room].decode("utf-8", "ignore")  # never half a character
    return head + tail


def generated_name(marker: RestoreMarker) -> str | None:
    """The exact name a database carrying ``marker`` has (None for role ``target``)."""
    if marker.role == "new":
        return new_database_name(marker.restore_id)
    if marker.role == "old":
        return old_database_name(marker.target, marker.restore_id)
    return None


def is_leftover(name: str, marker: RestoreMarker | None, target: str) -> bool:
    """True if database ``name`` is what a restore into ``target`` left behind and meant to
    drop: a partial ``new`` database, or an ``old`` one not kept.  Proven by the marker and
    the exact generated name, never by a name alone.  (Only meaningful while holding the
    restore lock of ``target``: then no restore that made it is running.)"""
    if marker is None or marker.target != target or marker.role == "target":
        return False
    if marker.role == "old" and marker.keep:
        return False
    return name == generated_name(marker)
