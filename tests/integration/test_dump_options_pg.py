"""The option table of ``sources.postgres.dump_options`` against the installed pg_dump.

Abbreviations are resolved against every name in the table: a long option pg_dump knows and
the table does not could make an abbreviation mean one thing to drbackup and another to
pg_dump.  So every option ``pg_dump --help`` lists must be in the table.
"""

from __future__ import annotations

import re
import subprocess

from drbackup.sources.postgres.commands import find_client_bin_dir
from drbackup.sources.postgres.dump_options import OPTIONS


def test_the_table_knows_every_option_the_installed_pg_dump_lists():
    bin_dir = find_client_bin_dir(None)
    text = subprocess.run(
        [str(bin_dir / "pg_dump"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    longs = set(re.findall(r"^\s+(?:-\S, )?--([a-z][a-z-]+)", text, re.M))
    shorts = set(re.findall(r"^\s+-(\S), --", text, re.M))
    assert len(longs) > 50 and len(shorts) > 25  # the help was read
    assert longs - {n for o in OPTIONS for n in o.names} == set()
    assert shorts - {o.short for o in OPTIONS} == set()
