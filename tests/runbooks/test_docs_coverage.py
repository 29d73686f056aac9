"""Nothing of the runbooks is silently skipped: every command block of docs/deploy.md and of
the 3 a.m. runbook sections belongs to a runbook that a test runs, and the blocks left out
are exactly the few listed here, each with its reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.runbooks.markdown import ROOT, parse_declarations, read_doc

# doc -> the sections that are runbooks (None: the whole page)
RUNBOOK_SECTIONS = {
    "docs/deploy.md": None,
    "docs/operations.md": ["## Restore runbook (the database is gone, it is 3 a.m.)"],
    "docs/pitr.md": ["## Runbook: the database is gone (3 a.m.)"],
    "docs/buckets.md": ["## Runbook: objects deleted or overwritten (3 a.m.)"],
}
RUNBOOK_TESTS = {
    "pg-restore": "test_pg_restore.py",
    "pitr": "test_pitr.py",
    "buckets": "test_buckets.py",
    "deploy": "test_deploy.py",
}
# (doc, the start of the block's first command): what cannot run here, and stays few
NOT_RUN = {
    ("docs/operations.md", "apt-get install postgresql-client-17"),
    ("docs/pitr.md", "systemctl stop postgresql@15-main"),
    ("docs/deploy.md", "scripts/image test"),
    (
        "docs/deploy.md",
        "podman build --format docker --build-arg BASE_IMAGE=localhost/drbackup-base:pgdg",
    ),  # fmt: skip
    ("docs/deploy.md", "deploy/compose/make-secrets"),
    ("docs/deploy.md", "curl -s localhost:9612/healthz"),
    ("docs/deploy.md", "cd deploy/kubernetes"),
    ("docs/deploy.md", "useradd --system"),
    ("docs/deploy.md", "sed 's/BUCKET/drbackup/g"),
    ("docs/deploy.md", "mc mb --with-lock"),
    ("docs/deploy.md", "podman load -i"),
}


def runbook_blocks():
    for path, sections in RUNBOOK_SECTIONS.items():
        doc = read_doc(path)
        if sections is None:
            yield from doc.blocks
        for heading in sections or ():
            yield from doc.section(heading)


def all_docs():
    return [read_doc(str(p.relative_to(ROOT))) for p in sorted((ROOT / "docs").glob("*.md"))]


def test_every_command_block_of_the_runbooks_belongs_to_a_runbook():
    unmarked = [b.where() for b in runbook_blocks() if b.is_command_block and not b.runbook]
    assert unmarked == [], "command blocks with no runbook=NAME (or norun=REASON)"
    untagged = [b.where() for b in runbook_blocks() if not b.lang]
    assert untagged == [], "blocks without a language: sh or console for commands, text for output"  # fmt: skip


def test_each_runbook_has_a_test_that_runs_it():
    named = {b.runbook for doc in all_docs() for b in doc.blocks if b.runbook}
    assert named == set(RUNBOOK_TESTS)
    for name, module in RUNBOOK_TESTS.items():
        source = (Path(__file__).parent / module).read_text()
        assert re.search(rf'load_runbook\(\s*"{name}"', source), f"{module} does not run {name}"


def test_each_runbook_declares_its_example_values_where_it_is_written():
    for doc in all_docs():
        declared = parse_declarations(doc.path, doc.text)
        for block in doc.blocks:
            if block.runbook:
                assert block.runbook in declared, f"{block.where()}: no <!-- runbook {block.runbook} -->"  # fmt: skip


def test_the_blocks_not_run_are_the_known_few_with_a_reason():
    left_out = [b for doc in all_docs() for b in doc.blocks if b.norun]
    for block in left_out:
        assert block.norun.strip(), f"{block.where()}: norun needs a reason"
    found = {(b.doc, b.commands()[0].text) for b in left_out}
    expected = {(doc, start) for doc, start in NOT_RUN}
    unknown = [f for f in found if not any(f[0] == d and f[1].startswith(s) for d, s in expected)]
    missing = [e for e in expected if not any(f[0] == e[0] and f[1].startswith(e[1]) for f in found)]  # fmt: skip
    assert unknown == [] and missing == [], (unknown, missing)


@pytest.mark.parametrize("path", sorted(RUNBOOK_SECTIONS))
def test_every_runbook_block_reads(path):
    for block in read_doc(path).blocks:
        if block.runbook and block.is_command_block:
            assert block.commands(), f"{block.where()}: a command block without a command"
        if block.file:
            assert not block.is_command_block, f"{block.where()}: file= is for a file's text"
