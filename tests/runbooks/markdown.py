"""Runbooks as the docs write them, read back for a test to run.

A fenced block whose info string carries ``runbook=NAME`` is a step of runbook NAME; the
first word stays the language, so the docs render as usual::

    ```sh runbook=pitr                  commands, run in order; each must exit 0
    ```console runbook=pitr exit=2      "$ " lines are commands; the lines after one are
                                        its expected output (``...`` alone on a line: any
                                        lines; ``…`` in a line: any text)
    ```yaml runbook=pitr file=/root/restore.yaml      written to that file
    ```sh runbook=deploy norun="a Kubernetes cluster"  not run, and listed as such

In ``sh`` blocks one line is one command; a line ending in ``\\`` goes on on the next, a
here-document runs to its delimiter, and comment lines are skipped.  A comment
``<!-- runbook NAME ...`` declares the example values of runbook NAME, one per line as
``KEY  value``: the test gives each KEY its own value, put in place of the example.

Pure functions over text: no I/O but :func:`read_doc`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMAND_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DECLARATION = re.compile(r"<!--\s*runbook\s+(?P<name>[\w-]+)(?P<body>.*?)-->", re.S)
_EXAMPLE = re.compile(r"^\s*(?P<key>[A-Z][A-Z0-9_]*)\s+(?P<value>\S.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>\w+)\1")


class RunbookSyntaxError(ValueError):
    """A runbook block the test cannot read; the message names the doc and line."""


@dataclass(frozen=True)
class Command:
    """One command of a block, where it is written, and the output the doc shows for it
    (None: the doc shows none, only the exit status is checked)."""

    doc: str
    line: int
    text: str
    expected: tuple[str, ...] | None = None

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Block:
    """A fenced block: ``line`` is the opening fence's (1-based), ``body`` its text with
    the fence's indentation removed."""

    doc: str
    line: int
    lang: str
    attrs: dict[str, str]
    body: str

    @property
    def runbook(self) -> str | None:
        return self.attrs.get("runbook")

    @property
    def norun(self) -> str | None:
        return self.attrs.get("norun")

    @property
    def exit_code(self) -> int:
        return int(self.attrs.get("exit", "0"))

    @property
    def file(self) -> str | None:
        return self.attrs.get("file")

    @property
    def is_command_block(self) -> bool:
        return self.lang in COMMAND_LANGUAGES

    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    def commands(self) -> list[Command]:
        """The commands of an ``sh`` or ``console`` block, in order."""
        lines = self.body.split("\n")
        if self.lang == "console":
            return _console_commands(self.doc, self.line + 1, lines)
        return _shell_commands(self.doc, self.line + 1, lines)


@dataclass
class Runbook:
    """The blocks of one runbook in the order they are run, and its example values."""

    name: str
    blocks: list[Block] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # KEY -> the value the doc shows

    def executed(self) -> list[Block]:
        return [b for b in self.blocks if not b.norun]

    def not_run(self) -> list[Block]:
        return [b for b in self.blocks if b.norun]


@dataclass(frozen=True)
class Doc:
    """One markdown file: its path relative to the checkout, text and fenced blocks."""

    path: str
    text: str
    blocks: tuple[Block, ...]

    def section(self, heading: str) -> tuple[Block, ...]:
        """The blocks under ``heading`` (a line ``## ...`` or ``### ...`` as written), up to
        the next heading of the same or a higher level."""
        lines = self.text.split("\n")
        start = next((i for i, text in enumerate(lines) if text.strip() == heading), None)
        if start is None:
            raise RunbookSyntaxError(f"{self.path}: no heading {heading!r}")
        level = len(heading) - len(heading.lstrip("#"))
        end = len(lines)
        for i in range(start + 1, len(lines)):
            match = re.match(r"^(#+) ", lines[i])
            if match and len(match.group(1)) <= level and not _inside_block(self, i + 1):
                end = i
                break
        return tuple(b for b in self.blocks if start + 1 < b.line <= end)


def _inside_block(doc: Doc, line: int) -> bool:
    return any(b.line < line <= b.line + b.body.count("\n") + 1 for b in doc.blocks)


def parse_info(info: str, where: str) -> tuple[str, dict[str, str]]:
    """``"sh runbook=pitr norun='x y'"`` -> ``("sh", {"runbook": "pitr", "norun": "x y"})``."""
    try:
        words = shlex.split(info)
    except ValueError as exc:
        raise RunbookSyntaxError(f"{where}: cannot read the info string {info!r}: {exc}") from exc
    if not words:
        return "", {}
    attrs = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise RunbookSyntaxError(f"{where}: {word!r} in the info string is not key=value")
        attrs[key] = value
    return words[0], attrs


def parse_blocks(path: str, text: str) -> tuple[Block, ...]:
    """Every fenced block of a markdown text, in order."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = _closing_fence(lines, i + 1, fence)
        if end is None:
            raise RunbookSyntaxError(f"{path}:{i + 1}: the block opened here is never closed")
        body = "\n".join(_dedent(line, indent) for line in lines[i + 1 : end])
        lang, attrs = parse_info(opening["info"].strip(), f"{path}:{i + 1}")
        blocks.append(Block(path, i + 1, lang, attrs, body))
        i = end + 1
    return tuple(blocks)


def _closing_fence(lines: list[str], start: int, fence: str) -> int | None:
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            return j
    return None


def _dedent(line: str, indent: int) -> str:
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent) :]


def parse_declarations(path: str, text: str) -> dict[str, dict[str, str]]:
    """``{runbook name: {KEY: example value}}`` from the ``<!-- runbook NAME ... -->``
    comments of one doc."""
    found: dict[str, dict[str, str]] = {}
    for match in _DECLARATION.finditer(text):
        examples = found.setdefault(match["name"], {})
        for line in match["body"].split("\n")[1:]:
            example = _EXAMPLE.match(line)
            if example:
                examples[example["key"]] = example["value"]
    return found


def _shell_commands(doc: str, first_line: int, lines: list[str]) -> list[Command]:
    commands, i = [], 0
    while i < len(lines):
        text = lines[i]
        if not text.strip() or text.lstrip().startswith("#"):
            i += 1
            continue
        start, parts = i, [text]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        heredoc = _HEREDOC.search("\n".join(parts))
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc["word"]:
                i += 1
                parts.append(lines[i])
        commands.append(Command(doc, first_line + start, "\n".join(parts)))
        i += 1
    return commands


def _console_commands(doc: str, first_line: int, lines: list[str]) -> list[Command]:
    commands: list[tuple[int, list[str], list[str]]] = []
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.startswith("$ "):
            start, parts = i, [text[2:]]
            while parts[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
            commands.append((start, parts, []))
        elif commands:
            commands[-1][2].append(text)
        elif text.strip():
            raise RunbookSyntaxError(f"{doc}:{first_line + i}: output before the first '$ '")
        i += 1
    return [
        Command(doc, first_line + start, "\n".join(parts), tuple(_trim(out)))
        for start, parts, out in commands
    ]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def read_doc(path: str) -> Doc:
    """``path`` relative to the checkout (``docs/pitr.md``)."""
    text = (ROOT / path).read_text(encoding="utf-8")
    return Doc(path, text, parse_blocks(path, text))


def load_runbook(name: str, docs: list[str]) -> Runbook:
    """Runbook ``name`` from ``docs``, in the order given, then in each doc's order."""
    runbook = Runbook(name)
    for path in docs:
        doc = read_doc(path)
        runbook.blocks += [b for b in doc.blocks if b.runbook == name]
        runbook.examples.update(parse_declarations(path, doc.text).get(name, {}))
    if not runbook.blocks:
        raise RunbookSyntaxError(f"no block of {', '.join(docs)} belongs to runbook {name}")
    return runbook
