"""Running pg_restore from a plaintext stream: feeding, phase timing, and error detection.

pg_restore keeps going after errors, prints "errors ignored on restore: N" and exits 1,
leaving tables empty.  We treat *any* error line or non-zero exit as a failed restore and
quote pg_restore's own messages.  The one exception is a ``tolerated`` set of exact messages
the client itself causes and that change nothing (``versions.harmless_restore_errors``): a
restore whose every error is one of them, and counted as such by pg_restore, succeeds.  The
set is asked for (a function) only when pg_restore reported errors: finding it may run
``pg_restore --version``, which a clean restore never needs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.codec.pipeline import iter_blocks_threaded, widen_pipe
from drbackup.errors import RestoreError
from drbackup.sources.postgres import processes
from drbackup.sources.postgres.archive import DataOffsets
from drbackup.threads import Background

_DATA_RE = re.compile(
    r"pg_restore: (processing data for table|executing SEQUENCE SET|processing item \d+ TABLE DATA)"
)
_POST_RE = re.compile(
    r"pg_restore: (creating (INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER|RULE|POLICY|EVENT TRIGGER)"
    r"|processing item \d+ (INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER))"
)
_ERROR_RE = re.compile(r"^pg_restore: error: (.*)$")
_IGNORED_RE = re.compile(r"^pg_restore: warning: errors ignored on restore: (\d+)$")
MAX_ERRORS_KEPT = 50
INCOMPLETE_HINT = "the target database is incomplete; fix the cause and restore again with --force"
SPOOL_BLOCK = 1 << 20  # bytes per read of the decrypted archive when spooling


@dataclass
class PhaseClock:
    """Classifies pg_restore --verbose lines into phases as they arrive."""

    start: float = field(default_factory=time.monotonic)
    data_at: float | None = None
    post_at: float | None = None
    end: float | None = None
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    tail: list[str] = field(default_factory=list)
    on_phase: Callable[[str], None] | None = None  # told "data" and "post_data" as they begin

    def feed(self, line: str) -> None:
        now = time.monotonic()
        if self.data_at is None and _DATA_RE.search(line):
            self.data_at = now
            self.tell("data")
        elif self.data_at is not None and self.post_at is None and _POST_RE.search(line):
            self.post_at = now
            self.tell("post_data")
        m = _ERROR_RE.match(line)
        if m:
            self.error_count += 1
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(m.group(1))
        elif (
            line.startswith(("Command was:", "DETAIL:", "HINT:", "CONTEXT:", "QUERY:"))
            and self.errors
        ):
            self.errors[-1] += " | " + line.strip()
        self.tail = (self.tail + [line])[-10:]

    def tell(self, phase: str) -> None:
        """Pass ``phase`` on to ``on_phase`` (a restore's progress)."""
        if self.on_phase is not None:
            self.on_phase(phase)

    def phases(self) -> dict[str, float]:
        end = self.end or time.monotonic()
        data = self.data_at or end
        post = self.post_at or end
        return {"pre_data": data - self.start, "data": post - data, "post_data": end - post}


@dataclass
class RestoreRun:
    phases: dict[str, float]
    fetch_decrypt_s: float
    bytes: int
    elapsed_s: float


def run_pg_restore(
    argv: list[str],
    env: dict,
    reader,
    *,
    spool_dir: str | None,
    what: str,
    alongside: Callable[[], None] | None = None,
    failed_hint: str = INCOMPLETE_HINT,
    tolerated: Callable[[], frozenset[str]] = frozenset,
    on_phase: Callable[[str], None] | None = None,
) -> RestoreRun:
    """Restore the archive read from ``reader`` with ``argv`` (stdin, or spooled if it ends
    with the placeholder ``{archive}``).

    ``alongside``: work that must be done before pg_restore starts but does not need the
    archive (preparing the target database).  A spooled restore runs it in a thread while
    the archive is spooled; if it fails, the spool stops and is removed and its exception is
    raised (it wins over a failed spool: without the overlap the spool would not have
    started).  A streamed restore runs it first.  ``tolerated``: exact error messages that
    do not fail the restore (see the module docstring).  ``on_phase`` is told, in the
    calling thread, when pg_restore starts (``"pre_data"``; with a spool, once it is
    written), loads data (``"data"``) and builds indexes and constraints (``"post_data"``).

    Raises :class:`RestoreError` quoting pg_restore's errors (its hint: ``failed_hint``,
    what the target database is now), :class:`IntegrityError` if the stream fails
    authentication mid-way (pg_restore is killed; what it loaded stays).
    """
    if argv and argv[-1] == "{archive}":
        return _restore_spooled(
            argv, env, reader, spool_dir, what, alongside, failed_hint, tolerated, on_phase
        )
    if alongside is not None:
        alongside()
    started = time.monotonic()
    clock = PhaseClock(on_phase=on_phase)
    proc = _spawn(argv, env, stdin=processes.PIPE)
    clock.tell("pre_data")
    widen_pipe(proc.stdin.fileno())
    feeder = _Feeder(reader, proc)
    feeder.start()
    _collect(proc, clock)
    feeder.join()
    code = proc.wait()
    clock.end = time.monotonic()
    if feeder.error is not None:
        raise feeder.error
    _raise_on_errors(code, clock, what, failed_hint, tolerated)
    return RestoreRun(clock.phases(), feeder.read_seconds, feeder.bytes, time.monotonic() - started)


def _restore_spooled(
    argv, env, reader, spool_dir, what, alongside, failed_hint, tolerated, on_phase
) -> RestoreRun:
    # Parallel pg_restore needs a seekable archive: spool the decrypted stream to a file
    # (disk = archive size; memory stays bounded).  Removed however the restore ends.
    started = time.monotonic()
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix="drbackup-spool-", dir=spool_dir))
    except OSError as exc:
        where = spool_dir or tempfile.gettempdir()
        raise RestoreError(
            f"cannot spool the archive in {where}: {exc.strerror or exc}",
            hint="--jobs > 1 needs room for the decrypted archive: choose --spool-dir",
        ) from None
    helper = Background(alongside, "drbackup-prepare") if alongside is not None else None
    try:
        archive = tmpdir / "archive.dump"
        offsets = DataOffsets()
        try:
            size = _spool(reader, archive, helper, offsets)
        except Exception:
            if helper is not None:
                helper.result()  # its error first, else the spool's
            raise
        if helper is not None:
            helper.result()
        offsets.patch(archive)
        fetch = time.monotonic() - started
        clock = PhaseClock(on_phase=on_phase)
        proc = _spawn(argv[:-1] + [str(archive)], env, stdin=processes.DEVNULL)
        clock.tell("pre_data")
        _collect(proc, clock)
        code = proc.wait()
        clock.end = time.monotonic()
        _raise_on_errors(code, clock, what, failed_hint, tolerated)
        return RestoreRun(clock.phases(), fetch, size, time.monotonic() - started)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _spool(reader, archive: Path, helper: Background | None, offsets: DataOffsets) -> int:
    """Write the plaintext of ``reader`` to ``archive``; its size.  ``offsets`` is fed every
    block, to find where the data blocks start (see archive.py).  Stops early (returns what
    it wrote) if ``helper`` has failed: nothing will be restored."""
    size = 0
    with open(archive, "wb") as out:
        # Reading (decrypting, decompressing) runs in a reader thread, overlapping the
        # writes here; the reader itself hands work to helper threads (codec.pipeline).
        for block in iter_blocks_threaded(reader, SPOOL_BLOCK):
            if helper is not None and helper.failed:
                break
            out.write(block)
            offsets.feed(block)
            size += len(block)
    return size


def _spawn(argv, env, stdin) -> processes.Popen:
    return processes.start(argv, env=env, stdin=stdin)


def _collect(proc, clock: PhaseClock) -> None:
    for raw in proc.stderr:
        clock.feed(raw.decode("utf-8", "replace").rstrip("\n"))


def _raise_on_errors(
    code: int,
    clock: PhaseClock,
    what: str,
    failed_hint: str,
    tolerated: Callable[[], frozenset[str]] = frozenset,
) -> None:
    if code == 0 and clock.error_count == 0:
        return
    if _only_tolerated(code, clock, tolerated):
        return
    if clock.errors:
        shown = "\n".join(f"  {e}" for e in clock.errors[:5])
        more = f"\n  ... and {clock.error_count - 5} more" if clock.error_count > 5 else ""
        raise RestoreError(
            f"{what} failed: pg_restore reported {clock.error_count} error(s)\n{shown}{more}",
            hint=failed_hint
            + (
                " (missing roles: add --with-globals or --no-owner)"
                if _missing_role(clock.errors)
                else ""
            ),
        )
    last = clock.tail[-1] if clock.tail else "(no output)"
    raise RestoreError(
        f"{what} failed: pg_restore exited with status {code}: {last}", hint=failed_hint
    )


def _only_tolerated(code: int, clock: PhaseClock, tolerated: Callable[[], frozenset[str]]) -> bool:
    """True when every error is tolerated and pg_restore's own count says so: exit 1 and
    "errors ignored on restore: N" with N the errors seen (all of them kept)."""
    if code != 1 or not clock.errors or clock.error_count != len(clock.errors):
        return False
    allowed = tolerated()
    if any(error not in allowed for error in clock.errors):
        return False
    ignored = next((m for line in reversed(clock.tail) if (m := _IGNORED_RE.match(line))), None)
    return ignored is not None and int(ignored.group(1)) == clock.error_count


def _missing_role(errors: list[str]) -> bool:
    return any("role" in e and "does not exist" in e for e in errors)


class _Feeder(threading.Thread):
    """Copies the decrypted archive into pg_restore's stdin, timing the fetch/decrypt side."""

    def __init__(self, reader, proc):
        super().__init__(name="drbackup-feeder", daemon=True)
        self.reader, self.proc = reader, proc
        self.error: BaseException | None = None
        self.read_seconds = 0.0
        self.bytes = 0

    def run(self) -> None:
        try:
            while True:
                t0 = time.monotonic()
                block = self.reader.read(1 << 20)
                self.read_seconds += time.monotonic() - t0
                if not block:
                    break
                self.proc.stdin.write(block)
                self.bytes += len(block)
        except BrokenPipeError:
            pass  # pg_restore exited early; its status and messages tell why
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            self.error = exc
            self.proc.kill()
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
