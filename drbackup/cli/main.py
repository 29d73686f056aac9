"""``drbackup``: the command group, global options, and the one place errors become exit codes.

Commands never call ``sys.exit``; they raise :mod:`drbackup.errors` exceptions and
:func:`main` maps them through the exit-code table.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import traceback

import click
from click.exceptions import NoArgsIsHelpError

from drbackup import __version__
from drbackup.cli.targets import pop_notes
from drbackup.errors import EXIT_CODE_TABLE, EXIT_INTERRUPTED, EXIT_USAGE, DrbackupError

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODE_TABLE)


class State:
    """Global options, and the context built from them on first use."""

    def __init__(self, config_path: str | None, debug: bool):
        self.config_path = config_path
        self.debug = debug
        self._ctx = None

    @property
    def app(self):
        if self._ctx is None:
            from drbackup.actions.context import AppContext
            from drbackup.config import load_config

            self._ctx = AppContext(load_config(self.config_path), progress=sys.stderr.isatty())
        return self._ctx

    def print_warnings(self) -> None:
        """What went wrong beside the command without failing it (a catalog write)."""
        for warning in self._ctx.warnings if self._ctx is not None else ():
            click.echo(f"drbackup: warning: {warning}", err=True)


class LazyGroup(click.Group):
    """A group whose commands are imported when used (see LAZY_COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return load_command(name)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="DRBACKUP_CONFIG",
    metavar="FILE",
    help="Configuration file (env DRBACKUP_CONFIG); embedded defaults without one.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="drbackup")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Encrypted, verified backups of PostgreSQL and S3 buckets, and drills that prove them."""
    ctx.obj = State(config_path, debug)
    ctx.call_on_close(ctx.obj.print_warnings)  # also when the command failed: before its error


# Command name -> the modules that build it: the first defines it, the others attach
# subcommands to it.  Loaded on first use, so `drbackup report` does not import boto3,
# SQLAlchemy and APScheduler's worth of modules it never runs (~0.8 s, ~60 MiB).
LAZY_COMMANDS: dict[str, tuple[str, ...]] = {
    "init": ("repo",),
    "config": ("config",),
    "list": ("inspect",),
    "show": ("inspect",),
    "verify": ("inspect",),
    "catalog": ("catalog",),
    "key": ("key",),
    "backup": ("backup", "backup_all"),
    "recovery-points": ("backup_all",),
    "restore": ("restore", "restore_minio", "restore_group"),
    "export": ("export",),
    "snapshot": ("snapshot",),
    "drill": ("drill",),
    "drill-bucket": ("bucket_drill",),
    "prune": ("prune",),
    "gc": ("gc",),
    "report": ("report",),
    "daemon": ("daemon",),
    "demo": ("demo",),
    "wal-push": ("wal",),
    "wal-fetch": ("wal",),
    "wal-async": ("wal",),
    "mark": ("wal",),
    "wal": ("wal",),
}


def load_command(name: str) -> click.Command | None:
    """Import the modules of command ``name`` and return it (None if unknown)."""
    modules = [importlib.import_module(f"drbackup.cli.{m}") for m in LAZY_COMMANDS.get(name, ())]
    for module in modules:
        for command in module.COMMANDS:
            if command.name == name:
                return command
    return None


def _on_sigterm(signum, frame):  # turn SIGTERM into the same path as Ctrl-C
    raise KeyboardInterrupt


def _show_click_error(exc: click.ClickException) -> int:
    """click's own errors (missing argument, bad option or choice) in drbackup's one-line
    style: ``drbackup: error: <message>`` and a hint naming the command's ``--help``."""
    if isinstance(exc, NoArgsIsHelpError):  # `drbackup` or a group alone: its help
        exc.show()
        return EXIT_USAGE
    if isinstance(exc, click.NoSuchOption):
        _visible_suggestions(exc)
    text = " ".join(line.strip() for line in exc.format_message().splitlines() if line.strip())
    if text[:1].isupper() and text[1:2].islower():  # "Missing argument", not "S3 ..."
        text = text[:1].lower() + text[1:]
    click.echo(f"drbackup: error: {text.rstrip('.')}", err=True)
    if isinstance(exc, click.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else "drbackup"
        click.echo(f"hint: {_usage_hint(exc, path)}", err=True)
    return EXIT_USAGE


_GLOBAL_OPTIONS = {"-c", "--config", "--debug"}
_TARGET_OPTIONS = {"-t", "--target", "--targets"}


def _visible_suggestions(exc: click.NoSuchOption) -> None:
    """ "Did you mean" only options ``--help`` shows (not the hidden old spellings)."""
    if exc.ctx is None or not exc.possibilities:
        return
    if exc.option_name == "--json" and _has_format(exc):
        exc.possibilities = []  # not "did you mean --point": the hint names --format json
        return
    hidden = {o for p in exc.ctx.command.params if getattr(p, "hidden", False) for o in p.opts}
    exc.possibilities = [p for p in exc.possibilities if p not in hidden]


def _has_format(exc: click.UsageError) -> bool:
    params = exc.ctx.command.params if exc.ctx is not None else []
    return any("--format" in getattr(p, "opts", ()) for p in params)


def _usage_hint(exc: click.UsageError, path: str) -> str:
    name = getattr(exc, "option_name", None)
    if name in _GLOBAL_OPTIONS:
        return f"{name} goes before the command: 'drbackup {name} ... {path.split(' ', 1)[-1]}'"
    if name == "--json" and _has_format(exc):
        return f"'{path}' writes JSON with --format json"
    if name in _TARGET_OPTIONS:
        return f"name targets as arguments: '{path} NAME...' (or --all), see '{path} --help'"
    return f"see '{path} --help'"


def _not_an_ignored_rollback(record: logging.LogRecord) -> bool:
    """psycopg logs "error ignored in rollback on <connection …>" when a transaction is
    unwound by another exception (Ctrl-C, SIGTERM, a failed step): that exception is the one
    the user is told about; the line would only land on the progress bar."""
    return not str(record.msg).startswith("error ignored in rollback")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code from the table (the console script exits with it)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    psycopg_log = logging.getLogger("psycopg")
    if _not_an_ignored_rollback not in psycopg_log.filters:
        psycopg_log.addFilter(_not_an_ignored_rollback)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    ran = False  # the command ran to its end (its exit code may still say a status)
    try:
        # Without standalone mode, click returns ctx.exit(code)'s code instead of raising
        # Exit: `report` exits with its nagios status this way.
        result = cli.main(args=argv, prog_name="drbackup", standalone_mode=False)
        code, ran = (result if isinstance(result, int) else 0), True
    except click.exceptions.Exit as exc:
        code, ran = exc.exit_code, True
    except click.ClickException as exc:
        code = _show_click_error(exc)
    except click.exceptions.Abort:
        click.echo("drbackup: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("drbackup: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except DrbackupError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"drbackup: error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"drbackup: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: run again with --debug and report the traceback", err=True)
        code = 1
    for note in pop_notes():  # deprecated spellings: after the output of a run that worked
        if ran:
            click.echo(note, err=True)
    return code


def run() -> None:
    """The console script: :func:`main`, then exit with its code.

    When the command is done and no other thread is still working, the process exits
    without tearing the interpreter down: every object is written and fsynced by then, and
    the teardown (freeing the modules of SQLAlchemy, pydantic, boto3: ~0.2 s) would only
    delay the exit status that a cron job or a script waits for.
    """
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon for t in others):
        sys.exit(code)  # let them finish, as a normal exit does
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # a closed or broken stdout: Python's own exit path reports it
    logging.shutdown()
    os._exit(code)
