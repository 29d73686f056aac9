"""How a run ended, in the words the catalog's runs history (and ``report``) uses.

``failed`` is for runs that went wrong; a run stopped from outside (Ctrl-C, SIGTERM, the
daemon cancelling it) is ``interrupted``, and one that declined to start because another
run held the target's lock is ``refused``: that is the lock doing its job, not a failure.
"""

from __future__ import annotations

from drbackup.errors import LockedError, shareable

# catalog.models' RUN_* values, spelled here so that a backup does not import SQLAlchemy
# before its dump starts (the catalog is imported beside the dump: docs/architecture.md).
RUN_FAILED, RUN_INTERRUPTED, RUN_REFUSED = "failed", "interrupted", "refused"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


def run_outcome(exc: BaseException) -> tuple[str, str]:
    """(status, error text) to record for a run that ended with ``exc``."""
    if isinstance(exc, LockedError):
        return RUN_REFUSED, shareable(exc)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, the daemon's Cancelled, SystemExit
        reason = str(exc)
        return RUN_INTERRUPTED, f"interrupted: {reason}" if reason else INTERRUPTED
    return RUN_FAILED, shareable(exc)  # no bucket object keys: the text is stored and sent
