"""What the import contracts (pyproject.toml, ``lint-imports``) cannot see: SQL, storage keys
and swallowed exceptions in the wrong rooms (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "drbackup"
LAYOUT_OWNERS = ("repository", "storage")  # who may spell a storage key
KEY_PREFIX = re.compile(r"^(manifests|data|blobs|locks|leases|wal|reports)/")
SQL = re.compile(r"^\s*(SELECT|CREATE|DROP|ALTER|INSERT|UPDATE|DELETE|COMMENT ON|SHOW|SET)\s")
SWALLOW = re.compile(r"suppress\((Base)?Exception\)")


def _modules(*under: str):
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in under or not under:
            yield path, path.read_text(encoding="utf-8")


def _strings(text: str):
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def test_only_the_repository_and_storage_spell_storage_keys():
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {value[:40]!r}"
        for path, text in _modules()
        if path.relative_to(PACKAGE).parts[0] not in LAYOUT_OWNERS
        for line, value in _strings(text)
        if KEY_PREFIX.match(value)
    ]
    assert found == []


def test_only_the_repository_and_storage_touch_a_repositorys_storage():
    found = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path, text in _modules()
        if path.relative_to(PACKAGE).parts[0] not in LAYOUT_OWNERS
        for n, line in enumerate(text.splitlines(), 1)
        if re.search(r"\b(repo|repository\(\))\.(_)?storage\b", line)
    ]
    assert found == []


def test_actions_and_the_cli_hold_no_sql():
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {value.strip()[:40]!r}"
        for path, text in _modules("actions", "cli", "report")
        for line, value in _strings(text)
        if SQL.match(value)
    ]
    assert found == []


def test_every_swallowed_exception_says_why():
    silent = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path, text in _modules()
        for n, line in enumerate(text.splitlines(), 1)
        if SWALLOW.search(line) and "#" not in line
    ]
    assert silent == []
