"""The pg_dump options a target may add (``pg_dump_options``), read the way pg_dump reads them.

pg_dump parses its argv with glibc's ``getopt_long``, so a check that looks only at whole
option names is bypassed: a long option may be abbreviated to any unambiguous prefix
(``--fil=PATH`` is ``--file=PATH``), takes its value after ``=`` or as the next word
(``--file PATH``), and short options bundle with each other and with their value (``-Fp``,
``-fPATH``, ``-vfPATH``).  :func:`find_problem` walks the list by those rules and accepts
only options of :data:`OPTIONS` marked allowed: options that change what the dump holds in
ways drbackup's checks know about, and never where the dump goes, its format or
compression, which database or snapshot it reads, or how it connects.

The table is pg_dump's own (``long_options`` and the short option string) for PostgreSQL
15 to 17, aliases included: abbreviations are resolved against every name pg_dump knows,
so an abbreviation that pg_dump would read as a refused option is ambiguous or refused
here too.  An option drbackup does not know (a newer pg_dump's) is refused.

Pure functions: nothing here runs pg_dump.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_OUTPUT = "set by drbackup", "remove it"
_FILE = "about the output file, which drbackup writes itself", "remove it"
_PARTIAL = "a partial dump", "drbackup backs up schema and data; remove it"
_SELECTION = (
    "a selection drbackup does not track",
    "use include_schemas, exclude_schemas, include_tables or exclude_tables",
)
_NOT_DUMP = "not a dump option", "remove it"


@dataclass(frozen=True)
class DumpOption:
    """One option of pg_dump: its long names, short letter, whether it takes a value, and
    why drbackup refuses it (``refusal`` = ``(reason, what to do)``; None: allowed)."""

    names: tuple[str, ...]
    short: str | None = None
    value: bool = False
    refusal: tuple[str, str] | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def _opt(*names: str, short=None, value=False, refusal=None) -> DumpOption:
    return DumpOption(names, short, value, refusal)


OPTIONS: tuple[DumpOption, ...] = (
    # -- where the dump goes, its format, how it is made: drbackup's own ------------------------
    _opt("file", short="f", value=True, refusal=_OUTPUT),
    _opt("format", short="F", value=True, refusal=_OUTPUT),
    _opt("compress", short="Z", value=True, refusal=_OUTPUT),
    _opt("jobs", short="j", value=True, refusal=("set by drbackup", "use 'jobs'")),
    _opt("no-sync", refusal=_FILE),
    _opt("sync-method", value=True, refusal=_FILE),
    _opt("snapshot", value=True, refusal=("set by drbackup", "its fingerprint reads the same one")),
    # -- connection ------------------------------------------------------------------------------
    _opt("dbname", short="d", value=True, refusal=("set by drbackup", "use 'dsn'")),
    _opt("host", short="h", value=True, refusal=("set by drbackup", "use 'dsn'")),
    _opt("port", short="p", value=True, refusal=("set by drbackup", "use 'dsn'")),
    _opt("username", short="U", value=True, refusal=("set by drbackup", "use 'dsn'")),
    _opt("no-password", short="w", refusal=_OUTPUT),
    _opt("password", short="W", refusal=_OUTPUT),
    _opt("role", value=True, refusal=("a connection option", "connect as that role in 'dsn'")),
    # -- selection: the config's keys, which drills compare against ------------------------------
    _opt("schema", short="n", value=True, refusal=("set by drbackup", "use 'include_schemas'")),
    _opt(
        "exclude-schema",
        short="N",
        value=True,
        refusal=("set by drbackup", "use 'exclude_schemas'"),
    ),
    _opt("table", short="t", value=True, refusal=("set by drbackup", "use 'include_tables'")),
    _opt(
        "exclude-table", short="T", value=True, refusal=("set by drbackup", "use 'exclude_tables'")
    ),
    _opt("table-and-children", value=True, refusal=_SELECTION),
    _opt("exclude-table-and-children", value=True, refusal=_SELECTION),
    _opt("extension", short="e", value=True, refusal=_SELECTION),
    _opt("filter", value=True, refusal=_SELECTION),
    _opt("data-only", short="a", refusal=_PARTIAL),
    _opt("schema-only", short="s", refusal=_PARTIAL),
    _opt("section", value=True, refusal=_PARTIAL),
    # -- not for backups ---------------------------------------------------------------------------
    _opt("binary-upgrade", refusal=("for upgrade utilities only", "remove it")),
    _opt("help", short="?", refusal=_NOT_DUMP),
    _opt("version", short="V", refusal=_NOT_DUMP),
    # -- allowed: what the dump holds and how it is written inside the archive -------------------
    _opt("blobs", "large-objects", short="b"),
    _opt("no-blobs", "no-large-objects", short="B"),
    _opt("clean", short="c"),
    _opt("create", short="C"),
    _opt("encoding", short="E", value=True),
    _opt("no-owner", short="O"),
    _opt("no-reconnect", short="R"),
    _opt("superuser", short="S", value=True),
    _opt("verbose", short="v"),
    _opt("no-privileges", "no-acl", short="x"),
    _opt("column-inserts", "attribute-inserts"),
    _opt("disable-dollar-quoting"),
    _opt("disable-triggers"),
    _opt("enable-row-security"),
    _opt("exclude-extension", value=True),
    _opt("exclude-table-data", value=True),
    _opt("exclude-table-data-and-children", value=True),
    _opt("extra-float-digits", value=True),
    _opt("if-exists"),
    _opt("include-foreign-data", value=True),
    _opt("inserts"),
    _opt("load-via-partition-root"),
    _opt("lock-wait-timeout", value=True),
    _opt("no-comments"),
    _opt("no-publications"),
    _opt("no-security-labels"),
    _opt("no-subscriptions"),
    _opt("no-table-access-method"),
    _opt("no-tablespaces"),
    _opt("no-toast-compression"),
    _opt("no-unlogged-table-data"),
    _opt("on-conflict-do-nothing"),
    _opt("quote-all-identifiers"),
    _opt("restrict-key", value=True),
    _opt("rows-per-insert", value=True),
    _opt("serializable-deferrable"),
    _opt("strict-names"),
    _opt("use-set-session-authorization"),
)

_BY_LONG = {name: option for option in OPTIONS for name in option.names}
_BY_SHORT = {option.short: option for option in OPTIONS if option.short}


def find_problem(options: Sequence[str]) -> tuple[int, str] | None:
    """``(index, one-line problem)`` of the first option pg_dump must not get, or None.

    ``options`` are extra argv words for pg_dump, in order; drbackup appends
    ``--dbname=...`` after them, so an option left without its value is refused too.
    """
    index = 0
    while index < len(options):
        word = options[index]
        if word.startswith("--") and word != "--":
            option, typed, problem, index = _long(options, index)
        elif word.startswith("-") and word not in ("-", "--"):
            option, typed, problem, index = _short(options, index)
        else:
            option, typed = None, None
            problem = f"pg_dump option '{word}' must start with '-' (write values as --name=value)"
            if word == "--":
                problem = "pg_dump option '--' ends pg_dump's options: remove it"
        if problem is None and not option.allowed:
            problem = _refused(typed, option)
        if problem is not None:
            return index, problem
        index += 1
    return None


def _long(options: Sequence[str], index: int):
    """Read the long option at ``index``: ``(option, typed, problem, index of its last word)``."""
    word = options[index]
    name, equals, _ = word[2:].partition("=")
    has_value = bool(equals)
    option, problem = _lookup_long(word, name)
    if problem is not None:
        return None, word, problem, index
    if has_value and not option.value:
        return option, word, f"pg_dump option '{word}' takes no value", index
    if option.value and not has_value:
        if index + 1 >= len(options):
            return option, word, _no_value(word), index
        return option, f"{word} {options[index + 1]}", None, index + 1
    return option, word, None, index


def _lookup_long(word: str, name: str) -> tuple[DumpOption | None, str | None]:
    """getopt_long's rules: an exact name wins; else the one option the prefix names."""
    if name in _BY_LONG:
        return _BY_LONG[name], None
    found = {id(o): o for n, o in _BY_LONG.items() if name and n.startswith(name)}
    if len(found) == 1:
        return next(iter(found.values())), None
    if not found:
        return None, (
            f"pg_dump option '{word}' is not one drbackup knows "
            "(see pg_dump_options in docs/configuration.md)"
        )
    names = [f"--{o.names[0]}" for o in found.values()]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return None, f"pg_dump option '{word}' is ambiguous ({shown}): write the whole name"


def _short(options: Sequence[str], index: int):
    """Read the bundle of short options at ``index`` (``-vfPATH``); the first refused wins."""
    word = options[index]
    for position in range(1, len(word)):
        letter = word[position]
        option = _BY_SHORT.get(letter)
        if option is None:
            return (
                None,
                word,
                f"pg_dump option '-{letter}' (in '{word}') is not one drbackup knows",
                index,
            )
        if not option.allowed:
            return option, word, None, index
        if option.value:
            if position + 1 < len(word):
                return option, word, None, index  # the rest of the word is its value
            if index + 1 >= len(options):
                return option, word, _no_value(word), index
            return option, f"{word} {options[index + 1]}", None, index + 1
    return _BY_SHORT[word[-1]], word, None, index


def _refused(typed: str, option: DumpOption) -> str:
    reason, instead = option.refusal
    canonical = f"--{option.names[0]}"
    head = typed.split("=", 1)[0].split(" ", 1)[0]
    resolved = "" if head == canonical else f" ({canonical})"
    return f"pg_dump option '{typed}'{resolved} is {reason} ({instead})"


def _no_value(word: str) -> str:
    return (
        f"pg_dump option '{word}' needs a value (write it as --name=value, or as the next "
        "word): without one pg_dump would take drbackup's --dbname as the value"
    )
