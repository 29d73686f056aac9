"""What a failed connection says: one line, a hint, and the right class (exit code)."""

from __future__ import annotations

from drbackup.errors import SourceError, SourceUnreachableError
from drbackup.sources.postgres.connection import _connect_error

DSN = "postgresql://postgres:secret@db.example:5432/ghost"


def test_a_missing_database_or_role_names_it_and_hints_at_the_config():
    db = _connect_error(
        DSN, Exception('connection failed: FATAL:  database "ghost" does not exist')
    )
    assert type(db) is SourceError
    assert db.message.endswith('database "ghost" does not exist')
    assert "secret" not in db.message
    assert db.hint.startswith("check the database named by the dsn")
    role = _connect_error(DSN, Exception('connection failed: FATAL:  role "nobody" does not exist'))
    assert role.hint.startswith("check the role named by the dsn")


def test_a_server_that_does_not_answer_is_unreachable():
    down = _connect_error(DSN, Exception("connection failed: Connection refused"))
    assert type(down) is SourceUnreachableError
    assert down.message.endswith(": connection refused")
