"""``drbackup drill``: run drills, verify their signed reports, list their history."""

from __future__ import annotations

import os

import click

from drbackup.actions import drill as actions
from drbackup.cli.render import echo_json, echo_table, go_quiet, quiet_option
from drbackup.cli.targets import all_option, chosen_targets, old_target_option
from drbackup.drill.checks import WARN, format_seconds
from drbackup.drill.plan import BackupChoice, ScratchPlan
from drbackup.drill.points import point_from_option
from drbackup.drill.record import DrillReport
from drbackup.drill.report import (
    failure_details,
    failure_summary,
    render,
)
from drbackup.errors import CheckFailedError


@click.group("drill")
def drill() -> None:
    """Restore drills: restore into scratch, prove the data, time it, sign the report."""


@drill.command("run")
@click.argument("names", nargs=-1, metavar="[PLAN] [TARGET]...")
@all_option("postgres and minio target (with a PLAN: every target of the plan)")
@old_target_option("--target")
@click.option("--backup", "backup_id", metavar="ID", help="Restore this backup (id or prefix).")
@click.option("--keep", is_flag=True, default=None, help="Keep the scratch for inspection.")
@click.option("--ephemeral", is_flag=True, help="Restore into a private local cluster (initdb).")
@click.option(
    "--into-major",
    type=click.IntRange(10, 99),
    metavar="N",
    help="Restore into PostgreSQL N (an upgrade rehearsal; the plan's into_major).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
    help="What to print on stdout (html: the drill's page, one self-contained file).",
)
@click.option(
    "-o", "--output", metavar="FILE", help="Write the signed report (.md: markdown, .html: html)."
)
@click.option(
    "--kind",
    type=click.Choice(["auto", "logical", "physical"]),
    help="physical: base backup + WAL; logical: dumps; auto (default): physical when the "
    "target has base backups.",
)
@click.option(
    "--point",
    metavar="POINT",
    help="Physical drills: latest, random, fingerprint, an ISO 8601 time or an LSN.",
)
@quiet_option
@click.pass_obj
def run(
    state, names, all_targets, old_targets, backup_id, keep, ephemeral, into_major, fmt, output,
    kind, point, quiet,
) -> None:  # fmt: skip
    """Run the drill PLAN (a drills/*.yaml file), or a default drill of TARGET(s); with
    both, the plan for those of its targets only.

    A minio target is drilled by restoring its snapshot into scratch buckets.  With
    --into-major N a postgres target is restored into PostgreSQL N: an upgrade rehearsal,
    compared across majors and timed (docs/majors.md).

    Exit 0 when every check passed (warnings allowed), 3 when a check failed.
    """
    overrides = {"keep": keep, "into_major": into_major, "kind": kind}
    overrides["point"] = point_from_option(point) if point else None
    if backup_id:
        overrides["backup"] = BackupChoice("id", backup_id=backup_id)
    if ephemeral:
        overrides["scratch"] = ScratchPlan(ephemeral=True)
    app = state.app
    go_quiet(app, quiet, ("--format " + fmt, fmt != "text"))
    plan, names = split_plan(names)
    every = [] if plan else [*app.config.postgres, *app.config.minio]
    targets = chosen_targets(names, all_targets, old_targets, every)
    chosen = actions.plan_for(app, plan, tuple(targets), **overrides)
    notify = None if quiet else (lambda line: click.echo(line, err=True))
    result = actions.run_drill(app, chosen, output=output, notify=notify)
    if quiet:
        _warn_warned(result.record)
    else:
        _echo_outcome(result, fmt)
    if result.failed:
        raise CheckFailedError(
            failure_details(result.record), redacted=failure_summary(result.record)
        )


def split_plan(names: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """(PLAN, TARGETs) of ``drill run``'s arguments: the first is a plan when it is a path
    (ends in .yaml or .yml, or has a directory); target names are neither."""
    if names and (names[0].endswith((".yaml", ".yml")) or os.sep in names[0]):
        return names[0], names[1:]
    return None, names


def _echo_outcome(result, fmt: str) -> None:
    """The report on stdout; kept scratch and the report file on stderr."""
    if fmt == "html":
        from drbackup.report.html import render_drill_report  # jinja2: only when asked

        click.echo(render_drill_report(result.report, fmt))
    else:
        click.echo(render(result.report, fmt))
    for line in result.kept:
        click.echo(line, err=True)
    if result.kept:
        click.echo("remove kept scratch with: drbackup drill cleanup --kept", err=True)
    if result.output:
        click.echo(f"report written to {result.output}", err=True)


def _warn_warned(record) -> None:
    """``--quiet``: a drill that passed with warnings says which checks warned, on stderr."""
    warned = [c for c in record.checks if c.status == WARN]
    if warned:
        names = "; ".join(f"{c.name}: {c.summary}" for c in warned)
        click.echo(f"drbackup: warning: drill {record.drill_id}: {names}", err=True)


@drill.command("verify-report")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="KEY",
    help="A trusted public key: base64, or a file of keys (PEM or base64 lines). Repeatable.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    help="The signing key file (its public half is used).",
)
@click.option(
    "--signature",
    type=click.Path(dir_okay=False),
    help="The detached signature (default: FILE.sig).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print what was verified as JSON (exit 0 only)."
)
@click.pass_obj
def verify_report_cmd(state, file, public_keys, key_file, signature, as_json) -> None:
    """Check that drill report FILE (Markdown, JSON, HTML) is exactly what was signed.

    Every byte of FILE is checked against its detached signature FILE.sig, and the signed
    record inside it against its own; a JSON record without .sig (as stored in the
    repository) is checked on its record alone.  The key is looked up by the fingerprint
    the report names among the trusted keys: --public-key and --key-file, or the config's
    drill.signing_key_file and drill.trusted_keys (keys it replaced).
    Exit 0 when authentic, 3 when unsigned, signed by an untrusted key, or changed.
    """
    app = state.app if not (public_keys or key_file) else None
    checked = actions.verify_report_file(app, file, public_keys, key_file, signature)
    if as_json:
        echo_json(_verified_json(file, checked))
        return
    click.echo(_verified_line(file, checked))


def _verified_json(file: str, checked) -> dict:
    """``verify-report --json`` (keys documented in docs/drills.md); only when authentic."""
    data = {
        "file": file,
        "authentic": True,
        "key_id": checked.key.key_id,
        "fingerprint": checked.key.fingerprint,
        "covers": "document" if checked.document else "record",
        "drill_id": None,
        "targets": [],
        "status": None,
        "counts": None,
    }
    if checked.report is not None:
        record = DrillReport.from_dict(checked.report)
        data.update(
            drill_id=record.drill_id,
            targets=[t.target for t in record.targets],
            status=record.status,
            counts=dict(record.counts),
        )
    return data


def _verified_line(file: str, checked) -> str:
    key = f"ed25519 key {checked.key.key_id}"
    covered = "every byte and its record" if checked.document else "its record (no .sig)"
    if checked.report is None:
        return f"ok: {file} is authentic ({key}; every byte)"
    record = DrillReport.from_dict(checked.report)  # the signed JSON is verified; now read it
    counts = record.counts
    return (
        f"ok: drill {record.drill_id} report is authentic ({key}; {covered}); "
        f"status {record.status}: {counts['pass']} passed, {counts['warn']} warned, "
        f"{counts['fail']} failed"
    )


@drill.command("history")
@click.option("-t", "--target", help="Only this target.")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(state, target, limit, as_json) -> None:
    """Past drills from the repository's reports, with the RTO trend per target."""
    data = actions.drill_history(state.app, target, limit=limit)
    if as_json:
        echo_json(data)
        return
    rows = [
        [
            e["drill_id"],
            e["target"],
            e.get("kind", "logical"),
            e["backup_id"] or "-",
            e["status"].upper(),
            _seconds(e["restore_s"]),
            _seconds(e["verification_s"]),
            _seconds(e["total_s"]),
            _seconds(e["rto_s"]),
            ", ".join(e["failed"]) or "-",
        ]
        for e in data["drills"]
    ]
    headers = ["drill", "target", "kind", "backup", "status", "restore", "verify", "total", "rto"]
    echo_table([*headers, "failed"], rows)
    for name, trend in sorted(data["trend"].items()):
        click.echo(_trend_line(name, trend))
    for problem in data["unreadable"]:
        click.echo(f"unreadable report: {problem}", err=True)


def _seconds(value) -> str:
    return "-" if value is None else format_seconds(value)


def _trend_line(name: str, trend: dict) -> str:
    change = trend["change_pct"]
    delta = f", {change:+.0f}% vs previous" if change is not None else ""
    headroom = (
        f", {trend['headroom_pct']:.0f}% headroom to rto {format_seconds(trend['rto_s'])}"
        if trend.get("rto_s")
        else ""
    )
    return (
        f"rto trend {name}: {trend['sparkline']} last {format_seconds(trend['last_s'])}, "
        f"median {format_seconds(trend['median_s'])} over {trend['drills']} drills{delta}{headroom}"
    )


@drill.command("cleanup")
@click.argument("plan", required=False, type=click.Path(dir_okay=False))
@click.option("--kept", is_flag=True, help="Also remove scratch kept with --keep.")
@click.pass_obj
def cleanup(state, plan, kept) -> None:
    """Remove scratch databases and clusters left by crashed (or, with --kept, kept) drills."""
    app = state.app
    chosen = actions.plan_for(app, plan) if plan else None
    done = actions.cleanup_scratch(app, chosen, include_kept=kept)
    for line in done.removed:
        click.echo(f"removed {line}")
    if not done.removed:
        click.echo("nothing to remove")
    for line in done.left:
        click.echo(
            f"left alone: {line} is named like drill scratch but carries no drbackup marker "
            "for that name (drop it by hand if it is a leftover)",
            err=True,
        )


@drill.command("public-key")
@click.option("--pem", "form", flag_value="pem", help="As PEM, for openssl (signer.pem).")
@click.option("--fingerprint", "form", flag_value="fingerprint", help="Its fingerprint only.")
@click.pass_obj
def public_key(state, form) -> None:
    """Print the public key of drill.signing_key_file (base64), for auditors."""
    click.echo(actions.public_key_of(state.app, form or "base64"))


COMMANDS = [drill]
