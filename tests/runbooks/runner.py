"""Running a runbook as a person at a terminal would: one command after another in bash,
with what they export and where they ``cd`` carried to the next one.

Each example value the runbook declares is replaced by the test's own in commands and
files, and the other way round in the output before it is compared with the doc's
expected output.  Output comparison forgives what differs from run to run (backup ids,
times, sizes, durations, LSNs, numbers, column widths) and nothing else.  A command that
exits with another status than the doc's, or prints something else, fails the test naming
the doc, the line and the command.  Blocks marked ``norun`` are collected in
:data:`NOT_RUN` for the session's report.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.runbooks.markdown import Block, Command, Runbook

COMMAND_TIMEOUT = 600.0
# doc:line -> (runbook, first command, reason) of every block a test left out on purpose
NOT_RUN: dict[str, tuple[str, str, str]] = {}
RUN: dict[str, int] = {}  # runbook -> commands run

Value = str | Callable[[list[str]], str | None]  # a late value reads the outputs so far

_VARIABLE = [
    (re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b"), "<id>"),
    (
        re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d(?::?\d\d)?)?"),
        "<time>",
    ),
    (re.compile(r"\b\d{4}-\d\d-\d\d\b"), "<date>"),
    (re.compile(r"\b[0-9A-F]{24}\b"), "<wal>"),
    (re.compile(r"\b[0-9A-F]{1,8}/[0-9A-F]{1,8}\b"), "<lsn>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:B|KiB|MiB|GiB|TiB|kB|MB|GB)\b"), "<size>"),
    (re.compile(r"\b(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+\b"), "<duration>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]
_ANY_LINES = {"...", "…"}


def normalize(line: str) -> str:
    """``line`` with what differs between runs replaced by ``<id>``, ``<time>``, ... and
    runs of whitespace collapsed."""
    for pattern, token in _VARIABLE:
        line = pattern.sub(token, line)
    return line.strip()


def output_matches(expected: tuple[str, ...], actual: str) -> bool:
    """True when ``actual`` (a command's whole output) is what ``expected`` shows, line by
    line after :func:`normalize`; ``...`` alone on a line matches any lines, ``…`` any text."""
    pattern = ""
    for line in expected:
        if line.strip() in _ANY_LINES:
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += ".*".join(map(re.escape, normalize(line).split("…"))) + r"\n"
    text = "".join(normalize(line) + "\n" for line in actual.rstrip("\n").split("\n"))
    if not actual.strip():
        text = ""
    return re.fullmatch(pattern, text) is not None


def substitute(text: str, table: dict[str, str]) -> str:
    """Every occurrence of a key of ``table`` replaced by its value, longest keys first, in
    one pass (a replacement is never replaced again)."""
    keys = sorted((k for k in table if k), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(map(re.escape, keys)))
    return pattern.sub(lambda m: table[m.group(0)], text)


def from_output(regex: str) -> Callable[[list[str]], str | None]:
    """A late value: group 1 of ``regex`` in the newest output that has it."""
    compiled = re.compile(regex)

    def find(outputs: list[str]) -> str | None:
        for output in reversed(outputs):
            match = compiled.search(output)
            if match:
                return match.group(1)
        return None

    return find


@dataclass
class Shell:
    """One terminal: bash runs each command with the environment and working directory the
    previous one left (exported variables only, as a new shell of the same session)."""

    env: dict[str, str]
    cwd: Path
    state_dir: Path  # where each command leaves its environment and directory

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """Run ``command`` (one or more lines of bash); its status and output (stdout and
        stderr as one stream, as a terminal shows them)."""
        env_file, cwd_file = self.state_dir / "env", self.state_dir / "cwd"
        script = "\n".join([
            "set -o pipefail", command, "__status=$?",
            f"env -0 > {shlex.quote(str(env_file))}", f"pwd > {shlex.quote(str(cwd_file))}",
            "exit $__status",
        ])  # fmt: skip
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", script], cwd=self.cwd, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return -1, output + f"\n(timed out after {timeout:.0f}s)"
        self._load_state(env_file, cwd_file)
        return proc.returncode, output

    def _load_state(self, env_file: Path, cwd_file: Path) -> None:
        if env_file.exists():
            pairs = env_file.read_text().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
            env_file.unlink()
        if cwd_file.exists():
            self.cwd = Path(cwd_file.read_text().strip())
            cwd_file.unlink()


class RunbookRun:
    """Runbook ``runbook`` in ``shell``, with ``values`` (KEY -> the test's value, or a late
    value) for its declared examples.  ``run_through(text)`` runs up to the block whose text
    holds ``text``; ``run_rest()`` to the end; ``outputs`` holds every command's output.
    Output lines matching a pattern of ``ignore`` (noise of the test host itself, never of
    drbackup) are left out before the comparison."""

    def __init__(
        self, runbook: Runbook, values: dict[str, Value], shell: Shell, ignore: tuple = ()
    ):
        self.runbook, self.values, self.shell = runbook, values, shell
        self.ignore = tuple(re.compile(p) if isinstance(p, str) else p for p in ignore)
        self.outputs: list[str] = []
        self.commands_run = 0
        self._next = 0
        check_declarations(runbook, values)
        for block in runbook.not_run():
            first = (block.commands() or [Command(block.doc, block.line, block.body)])[0]
            command = re.sub(r"\s+#.*$", "", first.text.split("\n")[0])  # shorter, for the report
            NOT_RUN[block.where()] = (runbook.name, command, block.norun)

    def run_through(self, text: str) -> None:
        blocks = self.runbook.blocks
        stop = next((i for i in range(self._next, len(blocks)) if text in blocks[i].body), None)
        if stop is None:
            pytest.fail(f"runbook {self.runbook.name}: no block after this point holds {text!r}")
        self._run_blocks(stop + 1)

    def run_rest(self) -> None:
        self._run_blocks(len(self.runbook.blocks))
        RUN[self.runbook.name] = self.commands_run

    def _run_blocks(self, stop: int) -> None:
        while self._next < stop:
            block = self.runbook.blocks[self._next]
            self._next += 1
            if block.norun:
                continue
            if block.file:
                self._write_file(block)
            elif block.is_command_block:
                for command in block.commands():
                    self._run_command(block, command)

    def _write_file(self, block: Block) -> None:
        table = self._forward()
        path = Path(substitute(block.file, table))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(substitute(block.body, table) + "\n", encoding="utf-8")

    def _run_command(self, block: Block, command: Command) -> None:
        text = substitute(command.text, self._forward())
        status, output = self.shell.run(text)
        self.outputs.append(output)
        self.commands_run += 1
        kept = [line for line in output.split("\n") if not any(p.search(line) for p in self.ignore)]
        shown = substitute("\n".join(kept), self._backward())
        if status != block.exit_code:
            pytest.fail(
                f"{command.where()}: `{command.text}` exited {status}, the doc expects "
                f"{block.exit_code} (runbook {self.runbook.name}; ran `{text}`)\n{output}",
                pytrace=False,
            )
        if command.expected is not None and not output_matches(command.expected, shown):
            pytest.fail(
                f"{command.where()}: `{command.text}` printed other output than the doc shows "
                f"(runbook {self.runbook.name})\n{_diff(command.expected, shown, output)}",
                pytrace=False,
            )

    def _resolved(self) -> dict[str, str]:
        resolved = {}
        for key, value in self.values.items():
            value = value(self.outputs) if callable(value) else value
            if value is not None:
                resolved[key] = value
        return resolved

    def _forward(self) -> dict[str, str]:
        values = self._resolved()
        return {self.runbook.examples[k]: v for k, v in values.items()}

    def _backward(self) -> dict[str, str]:
        values = self._resolved()
        return {v: self.runbook.examples[k] for k, v in values.items()}


def check_declarations(runbook: Runbook, values: dict[str, Value]) -> None:
    """Fail unless the test gives a value for exactly the examples the doc declares, and
    each example still appears in the runbook (a stale declaration replaces nothing)."""
    declared, given = set(runbook.examples), set(values)
    if declared != given:
        pytest.fail(
            f"runbook {runbook.name}: the doc declares {sorted(declared)}, the test gives "
            f"{sorted(given)} (missing: {sorted(declared - given)}, extra: {sorted(given - declared)})",
            pytrace=False,
        )
    texts = "\n".join(b.body + "\n" + (b.file or "") for b in runbook.executed())
    stale = [k for k, example in runbook.examples.items() if example not in texts]
    if stale:
        pytest.fail(
            f"runbook {runbook.name}: examples {stale} appear in none of its blocks", pytrace=False
        )


def _diff(expected: tuple[str, ...], actual: str, printed: str) -> str:
    want = [normalize(line) for line in expected]
    got = [normalize(line) for line in actual.rstrip("\n").split("\n")]
    diff = difflib.unified_diff(
        want, got, "the doc (normalized)", "the output (normalized)", lineterm=""
    )
    return "\n".join(diff) + "\n--- the output as printed:\n" + printed
