"""The size limits of docs/architecture.md: no module over 500 lines, no function over 60.

A module that outgrows them is split along its seams (issue 15); this test keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import drbackup

PACKAGE = Path(drbackup.__file__).parent
MODULE_LINES = 500
FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    }
    assert long == {}, f"modules over {MODULE_LINES} lines: split them along their seams"


def test_no_function_is_over_60_lines():
    long = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = lines
    assert long == {}, f"functions over {FUNCTION_LINES} lines"


def test_the_limits_are_checked_on_the_package_itself():
    assert len(_modules()) > 100  # the installed package, not an empty directory
