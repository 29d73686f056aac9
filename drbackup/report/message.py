"""The health report as a chat or email message: what a person reads on a phone.

No fixed-width table (chat clients use proportional fonts and wrap lines): a status line,
then one bullet per target, problems first, each naming its findings in words.  The text is
light Markdown (``**bold**``, ``- `` bullets), which Apprise passes to Slack, Teams and
Discord as Markdown, renders as HTML in email and flattens to plain text for ntfy and JSON
webhooks.
"""

from __future__ import annotations

from drbackup.report.health import HealthReport, Status, TargetHealth, human_age
from drbackup.units import human_size

SHOWN_TARGETS = 20  # bullets in one message; the rest are counted


def report_subject(report: HealthReport) -> str:
    """``drbackup health CRITICAL: app, crm`` (the targets that are not OK, worst first, at
    most five)."""
    problems = [t.facts.name for t in _worst_first(report.targets) if t.status is not Status.OK]
    names = ", ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
    return f"drbackup health {report.status.name}: {names or 'all targets'}"


def report_body(report: HealthReport) -> str:
    """The message text: a summary line, the repository's own findings, a bullet per target."""
    bad = [t for t in report.targets if t.status is not Status.OK]
    lines = [
        f"**{report.status.name}**: {len(bad)} of {len(report.targets)} targets need attention"
        if bad
        else f"**OK**: all {len(report.targets)} targets within their objectives",
        f"Repository {_repository(report)}, at {report.generated_at:%Y-%m-%d %H:%M}Z",
    ]
    lines += [f"- **repository**: {f.status.name} - {f.message}" for f in report.findings]
    ordered = _worst_first(report.targets)
    lines += ["", *[_target_bullet(report, t) for t in ordered[:SHOWN_TARGETS]]]
    if len(ordered) > SHOWN_TARGETS:
        lines.append(f"- ... and {len(ordered) - SHOWN_TARGETS} more (drbackup report)")
    return "\n".join(lines)


def _worst_first(targets: list[TargetHealth]) -> list[TargetHealth]:
    return sorted(targets, key=lambda t: (-int(t.status), t.facts.name))


def _repository(report: HealthReport) -> str:
    repo = report.repository
    if repo.wrong_key:
        return f"{repo.url} (WRONG KEY)"
    if not repo.reachable:
        return f"{repo.url} (UNREACHABLE)"
    return f"{repo.url} ({human_size(repo.size)})" if repo.size is not None else repo.url


def _target_bullet(report: HealthReport, target: TargetHealth) -> str:
    """``- **app** CRITICAL: last backup is 2d old, older than the rpo 1d`` or, when OK,
    the facts that make it OK (age of the last backup and drill)."""
    shared = {f.message for f in report.findings}
    own = [f.message for f in target.findings if f.message not in shared]
    head = f"- **{target.facts.name}** {target.status.name}"
    if own:
        return f"{head}: " + "; ".join(own)
    return f"{head}: {_facts(report, target)}"


def _facts(report: HealthReport, target: TargetHealth) -> str:
    f, now = target.facts, report.generated_at
    backup = (
        f"last backup {human_age(now - f.newest.recovery_point)} ago (rpo {human_age(f.rpo)})"
        if f.newest
        else "no backup yet"
    )
    last = f.drills[-1] if f.drills else None
    drill = f"last drill {last.status} {human_age(now - last.started_at)} ago" if last else ""
    return ", ".join(p for p in (backup, drill) if p)
