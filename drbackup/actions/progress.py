"""How an action tells about the bytes it moves, without printing (the command draws them).

An action opens a *phase* per long step (``backup app``: dumped; ``restore app``: read) and
feeds it the bytes as they go; it says the phase's total when it knows it, exact (the sizes
a manifest records) or an estimate (the database size, the previous backup's).  The CLI's
reporter (``cli/render.py``) draws a bar on a terminal and prints one line per phase
otherwise; :data:`SILENT` (the default) does nothing, for the daemon and drills.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from drbackup.threads import Background

Tick = Callable[[int], None]  # bytes done since the last call


Total = int | None | Callable[[], int | None]


class Progress:
    """Where an action's phases go; this base class ignores them."""

    wants_total = False  # whether a total is shown: an action skips finding one otherwise

    @contextmanager
    def phase(
        self, label: str, verb: str, total: Total = None, *, estimate: bool = False
    ) -> Iterator[Tick]:
        """A step of ``label`` (``"backup app"``) that ``verb``\\s (``"dumped"``) bytes;
        yields the callback the step feeds with byte counts.  ``total``: the bytes it will
        move (None: unknown), or a function that tells them, asked once bytes move (see
        :func:`estimate_beside`); ``estimate``: that total is a guess."""
        yield _ignore

    def note(self, label: str, text: str) -> None:
        """What the open phase of ``label`` does now that moves no bytes (pg_restore
        building indexes after it read the archive), for a terminal to show beside its bar;
        its time is the command's summary's."""


def _ignore(nbytes: int) -> None:
    return None


SILENT = Progress()


def estimate_beside(find: Callable[[], int | None], fallback: int | None) -> Callable[[], int]:
    """A phase total that ``find`` works out in a background thread while the phase starts
    (a manifest read waits for the key, which a backup stretches beside its first steps),
    else ``fallback``.  An estimate that cannot be found (storage, key) leaves the fallback:
    the backup's own path reports such errors."""
    found = Background(find, "drbackup-estimate")

    def total() -> int | None:
        found.join()
        return (None if found.failed else found.result()) or fallback

    return total


def previous_size(repo, target: str, kind: str, item_type: str) -> int | None:
    """The plaintext size of the ``item_type`` items of ``target``'s newest backup of
    ``kind`` (an estimate of the next one's); None without one, or without a key that reads
    manifests."""
    if not repo.keyring.can_read:
        return None
    for ref in reversed(repo.list_refs(target)[-5:]):  # a few: kinds interleave
        manifest = repo.load_manifest(ref)
        if manifest.kind == kind:
            return sum(i.size for i in manifest.items if i.type == item_type)
    return None


class CountingReader:
    """A file-like reader that hands the size of each read to ``tick``."""

    def __init__(self, reader, tick: Tick):
        self._reader, self._tick = reader, tick

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n if n and n > 0 else 1 << 20)
        if data:
            self._tick(len(data))
        return data
