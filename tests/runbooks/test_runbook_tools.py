"""The runbook reader and runner themselves: what they take for a command, an expected
output and an example value, and that a wrong status or output fails, naming the line."""

from __future__ import annotations

import pytest

from tests.runbooks import runner
from tests.runbooks.markdown import (
    Runbook,
    RunbookSyntaxError,
    parse_blocks,
    parse_declarations,
)
from tests.runbooks.runner import RunbookRun, Shell, normalize, output_matches, substitute

DOC = """\
# A doc

<!-- runbook demo: example values
       WHERE   /srv/example
       WHO     alice
-->

1. Step one:
   ```sh runbook=demo
   # a comment line is no command
   mkdir -p /srv/example && cd /srv/example
   export GREETING="hello alice"
   printf '%s\\n' \\
       one two
   cat > note.txt <<'EOF'
   $GREETING stays literal
   EOF
   ```
2. Step two:
   ```console runbook=demo exit=3
   $ echo "$GREETING from $(basename "$PWD")"; exit 3
   hello alice from example
   ```
   ```yaml runbook=demo file=/srv/example/conf.yaml
   who: alice
   ```
   ```sh runbook=demo norun="needs a Kubernetes cluster"
   kubectl apply -k .
   ```
```
untagged
```
"""


@pytest.fixture(autouse=True)
def own_report(monkeypatch):
    """The demo runbook stays out of the session's report."""
    monkeypatch.setattr(runner, "NOT_RUN", {})
    monkeypatch.setattr(runner, "RUN", {})


def demo_runbook() -> Runbook:
    blocks = parse_blocks("docs/demo.md", DOC)
    examples = parse_declarations("docs/demo.md", DOC)["demo"]
    return Runbook("demo", [b for b in blocks if b.runbook == "demo"], examples)


def test_blocks_keep_their_language_line_and_attributes():
    blocks = parse_blocks("docs/demo.md", DOC)
    assert [(b.lang, b.line, b.runbook) for b in blocks] == [
        ("sh", 9, "demo"), ("console", 20, "demo"), ("yaml", 24, "demo"), ("sh", 27, "demo"),
        ("", 30, None),
    ]  # fmt: skip
    assert blocks[1].exit_code == 3 and blocks[2].file == "/srv/example/conf.yaml"
    assert blocks[3].norun == "needs a Kubernetes cluster"
    assert blocks[2].body == "who: alice"  # the list item's indentation removed


def test_a_shell_block_is_one_command_per_line_with_continuations_and_heredocs():
    commands = parse_blocks("docs/demo.md", DOC)[0].commands()
    assert [(c.line, c.text.split("\n")[0]) for c in commands] == [
        (11, "mkdir -p /srv/example && cd /srv/example"),
        (12, 'export GREETING="hello alice"'),
        (13, "printf '%s\\n' \\"),
        (15, "cat > note.txt <<'EOF'"),
    ]
    assert commands[3].text.endswith("EOF") and commands[2].expected is None


def test_a_console_block_pairs_each_command_with_the_output_after_it():
    text = "```console\n$ a \\\n  --flag\nout 1\n\n$ b\n```\n"
    commands = parse_blocks("d.md", text)[0].commands()
    assert [(c.line, c.text, c.expected) for c in commands] == [
        (2, "a \\\n  --flag", ("out 1",)),
        (6, "b", ()),
    ]
    with pytest.raises(RunbookSyntaxError, match=r"d\.md:2: output before the first"):
        parse_blocks("d.md", "```console\nstray\n$ b\n```\n")[0].commands()


def test_malformed_blocks_are_named():
    with pytest.raises(RunbookSyntaxError, match=r"d\.md:1: 'oops' in the info string"):
        parse_blocks("d.md", "```sh runbook=x oops\n```\n")
    with pytest.raises(RunbookSyntaxError, match=r"d\.md:2: the block opened here is never"):
        parse_blocks("d.md", "x\n```sh\nls\n")


def test_declarations_name_each_example_value():
    assert parse_declarations("d.md", DOC) == {"demo": {"WHERE": "/srv/example", "WHO": "alice"}}


def test_normalize_forgives_ids_times_sizes_durations_and_column_widths():
    printed = "app/20261206T221737Z-0c8c5f  postgres  2026-12-06T22:17:37Z  6.2 KiB in 0.9s, LSN 0/3000258, 971 files"  # fmt: skip
    documented = "app/20261123T010004Z-5d1e2f postgres 2026-11-23T01:00:05Z 22.0 MiB in 21.3s, LSN 2/1C3F5A8, 1874 files"  # fmt: skip
    assert normalize(printed) == normalize(documented)
    assert normalize("restored 3 objects") != normalize("restored 3 blobs")


def test_output_must_match_every_line_unless_the_doc_elides():
    assert output_matches(("a 1", "b"), "a 2\nb\n")
    assert not output_matches(("a 1", "b"), "a 2\nb\nc\n")  # an extra line
    assert not output_matches(("a 1",), "a 2\nb\n")
    assert output_matches(("a", "...", "z"), "a\nb\nc\nz\n")
    assert output_matches(("a", "...", "z"), "a\nz\n")
    assert output_matches(("using …, within",), "using backup x, within\n")
    assert not output_matches(("using …, within",), "using backup x, before\n")
    assert output_matches((), "") and not output_matches((), "something\n")


def test_substitution_is_one_pass_longest_first():
    table = {"/run/secrets": "/tmp/s", "/run/secrets/ak": "/tmp/other", "a": "b", "b": "c"}
    assert substitute("/run/secrets/ak /run/secrets/sk a b", table) == "/tmp/other /tmp/s/sk b c"


def run_demo(tmp_path, values):
    shell = Shell({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, tmp_path, tmp_path)
    return shell, RunbookRun(demo_runbook(), values, shell)


def test_a_runbook_runs_in_one_terminal_with_the_test_values(tmp_path):
    where = tmp_path / "example"
    shell, run = run_demo(tmp_path, {"WHERE": str(where), "WHO": "bob"})
    run.run_rest()
    assert (where / "note.txt").read_text() == "$GREETING stays literal\n"
    assert (where / "conf.yaml").read_text() == "who: bob\n"
    assert shell.env["GREETING"] == "hello bob" and shell.cwd == where
    assert run.commands_run == 5  # the norun block's kubectl is not among them
    assert runner.NOT_RUN == {"docs/demo.md:27": ("demo", "kubectl apply -k .", "needs a Kubernetes cluster")}  # fmt: skip
    assert runner.RUN == {"demo": 5}


def test_a_failing_step_names_the_doc_line_and_command(tmp_path):
    _, run = run_demo(tmp_path, {"WHERE": "/proc/no/such/dir", "WHO": "bob"})
    with pytest.raises(pytest.fail.Exception, match=r"docs/demo\.md:11: `mkdir -p /srv/example && cd /srv/example` exited 1, the doc expects 0"):  # fmt: skip
        run.run_rest()


def test_other_output_than_the_doc_shows_fails(tmp_path):
    where = tmp_path / "other-name"
    _, run = run_demo(tmp_path, {"WHERE": str(where), "WHO": "bob"})
    with pytest.raises(pytest.fail.Exception, match=r"docs/demo\.md:21: .* printed other output"):
        run.run_rest()


def test_values_must_match_the_declaration(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"missing: \['WHO'\], extra: \['WHAT'\]"):
        run_demo(tmp_path, {"WHERE": "/x", "WHAT": "y"})
    stale = demo_runbook()
    stale.examples["GONE"] = "no longer in any block"
    with pytest.raises(pytest.fail.Exception, match=r"examples \['GONE'\] appear in none"):
        RunbookRun(stale, {"WHERE": "/x", "WHO": "y", "GONE": "z"}, Shell({}, tmp_path, tmp_path))
