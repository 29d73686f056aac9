"""Run by the image's Python (tests/image/test_pg17.py): the drill of ``drill run --target T
--into-major N``, with one row of the restored copy changed before the checks run, as if the
restore had gone wrong there.  Prints the drill's report as JSON.

    python drill_tampered.py CONFIG TARGET MAJOR SQL
"""

from __future__ import annotations

import json
import sys

import psycopg

from drbackup.actions.context import AppContext
from drbackup.actions.drill import plan_for, run_drill
from drbackup.config import load_config


def main(config: str, target: str, major: str, statement: str) -> None:
    app = AppContext(load_config(config))
    plan = plan_for(app, None, (target,), into_major=int(major))

    def change(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(statement).rowcount == 1

    result = run_drill(app, plan, notify=lambda line: print(line, file=sys.stderr),
                       after_restore=change)  # fmt: skip
    print(json.dumps(result.report))


if __name__ == "__main__":
    main(*sys.argv[1:])
