"""Every child process drbackup starts is started here.

pg_dump, pg_dumpall, pg_restore, initdb, postgres, pg_receivewal (``receivewal.py``), the
``--version`` probes, ``locale`` and ``pg_config``, and drbackup's own background
``wal-push``/``wal-fetch`` helpers.  Their argv
is built by pure functions (``commands.py``, ``cluster_argv.py``); this module only runs it:

* with an explicit environment built by ``environment.py`` (``child_environ``, ``client_env``
  with a password, ``server_env``), from which drbackup's secrets are removed once more here;
  only drbackup's own helpers (``drbackup_child``) keep them, as they need its settings;
* with one-line errors that never show a secret: ``cannot run <program>: <reason>``, the
  reason passed through :func:`environment.mask_dsn`.

The unit tests fail for any ``subprocess`` call outside this module, and for a start
here or there without ``env=``.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from drbackup.codec.pipeline import widen_pipe
from drbackup.errors import SourceError
from drbackup.sources.postgres.commands import major_of_bin_dir, parse_tool_version
from drbackup.sources.postgres.environment import child_environ, mask_dsn

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired
Popen = subprocess.Popen


def _cannot_run(name: str, exc: BaseException) -> SourceError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return SourceError(mask_dsn(f"cannot run {name}: {reason}"))


def _environ(env: Mapping[str, str], drbackup_child: bool) -> dict[str, str]:
    return dict(env) if drbackup_child else child_environ(env)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float | None = None,
    cwd: str | Path | None = None,
    name: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end, stdout and stderr captured as text; the caller reads the
    exit status.  ``env`` is the child's environment less drbackup's secrets; ``name``
    (default ``argv[0]``) is what errors call the program.

    Raises SourceError if it cannot be started or runs longer than ``timeout`` seconds.
    """
    try:
        return subprocess.run(
            list(argv),
            env=_environ(env, False),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"{name or argv[0]} did not finish within {timeout:g}s") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise _cannot_run(name or argv[0], exc) from None


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: int | IO[Any] | None = DEVNULL,
    stdout: int | IO[Any] | None = DEVNULL,
    stderr: int | IO[Any] | None = PIPE,
    cwd: str | Path | None = None,
    new_session: bool = False,
    name: str | None = None,
    drbackup_child: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` and return it running (binary pipes); the caller waits for it.

    ``env`` as for :func:`run`; ``drbackup_child``: the child is drbackup itself and gets
    ``env`` whole (its own settings and secrets).  ``new_session``: its own session, so that
    a terminal's Ctrl-C reaches only us (a server, a background helper).  Raises
    SourceError if it cannot be started.
    """
    try:
        return subprocess.Popen(
            list(argv),
            env=_environ(env, drbackup_child),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            start_new_session=new_session,
            close_fds=True,
        )
    except OSError as exc:
        raise _cannot_run(name or argv[0], exc) from None


def last_line(text: str) -> str:
    """The last non-blank line of a program's output, stripped ("(no message)" if none)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


class StreamingProcess:
    """A child whose stdout the caller streams (through a 1 MiB pipe: ``widen_pipe``), its
    stderr drained into a bounded tail; killed if the ``with`` block is left early.

    ``what`` names it in errors (``"pg_dump of database app"``).
    """

    def __init__(self, argv: list[str], env: Mapping[str, str], what: str):
        self.argv, self.env, self.what = argv, env, what
        self.stderr_tail: deque[str] = deque(maxlen=20)

    def __enter__(self) -> StreamingProcess:
        self.proc = start(self.argv, env=self.env, stdout=PIPE)
        self.stdout = self.proc.stdout
        widen_pipe(self.stdout.fileno())
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        return self

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def finish(self) -> None:
        """Wait for exit; raise SourceError with the last stderr line on a non-zero status."""
        code = self.proc.wait()
        self._drain.join(timeout=5)
        if code != 0:
            tail = last_line("\n".join(self.stderr_tail))
            raise SourceError(mask_dsn(f"{self.what} failed (exit {code}): {tail}"))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def tool_version(bin_dir: Path, tool: str) -> tuple[int, int]:
    """``(major, minor)`` of ``bin_dir/tool --version``.  Raises SourceError if it cannot
    run, fails, or prints no version."""

    path = str(bin_dir / tool)
    result = run([path, "--version"], env=child_environ(), timeout=30)
    if result.returncode != 0:
        raise SourceError(f"cannot run {path}: exit {result.returncode}")
    return parse_tool_version(result.stdout)


def tool_major(bin_dir: Path, tool: str) -> int:
    """The major of ``bin_dir/tool``: from a Debian directory's name, else by running it."""
    return major_of_bin_dir(bin_dir) or tool_version(bin_dir, tool)[0]
