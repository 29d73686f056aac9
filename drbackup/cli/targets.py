"""One way to name targets: ``TARGET...`` as arguments, or ``--all``.

Every command that takes several targets reads them so (``backup postgres``, ``snapshot
minio``, ``backup all``, ``prune``, ``report``, ``drill run``).  The spellings they had
before (``--target A`` repeated, ``-t A``, ``--targets A,B``) still work, hidden from
``--help``: a run that used one ends, when it succeeded, with a one-line note on stderr
naming the spelling to use (:func:`pop_notes`, printed by ``main``), so scripts keep working
and their logs say what to change.  A failed run shows its error alone.
"""

from __future__ import annotations

import click

from drbackup.errors import UsageError

_NOTES: list[str] = []  # deprecation notes of this run, printed by main() after success


def all_option(what: str):
    """``--all``: every target of the kind (``what``: "postgres target", ...)."""
    return click.option("--all", "all_targets", is_flag=True, help=f"Every {what}.")


def old_target_option(*decls: str, comma_separated: bool = False):
    """A target option of an earlier release, kept for scripts and hidden from ``--help``:
    repeatable (``--target A --target B``) or ``comma_separated`` (``--targets A,B``).
    Its values land in ``old_targets``; :func:`chosen_targets` merges and notes them."""
    return click.option(
        *decls,
        "old_targets",
        multiple=True,
        hidden=True,
        callback=_split if comma_separated else None,
    )


def _split(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def chosen_targets(
    names: tuple[str, ...],
    all_targets: bool,
    old: tuple[str, ...],
    every: list[str] | None = None,
) -> list[str]:
    """The targets named (arguments, then the old option's; each once), or ``every`` for
    ``--all``.

    Raises UsageError when names and ``--all`` are both given.  Names nobody gave and no
    ``--all`` give ``[]``: the command decides (every target, or an error).
    """
    given = list(dict.fromkeys([*names, *old]))  # a name given twice is one target
    if old:
        _note_old_spelling(given)
    if all_targets and given:
        raise UsageError(
            "give target names or --all, not both", hint="drop the names to take every target"
        )
    return list(every or []) if all_targets else given


def _note_old_spelling(given: list[str]) -> None:
    ctx = click.get_current_context()
    spelled = next(
        ("/".join(p.opts) for p in ctx.command.params if p.name == "old_targets"), "--target"
    )
    _NOTES.append(
        f"drbackup: note: {spelled} is deprecated: name targets as arguments, "
        f"'{ctx.command_path} {' '.join(given)}' (or --all for every target)"
    )


def pop_notes() -> list[str]:
    """The deprecation notes of the run that just ended (and forget them)."""
    notes = list(_NOTES)
    _NOTES.clear()
    return notes
