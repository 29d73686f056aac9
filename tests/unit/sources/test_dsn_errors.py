"""A malformed DSN (e.g. a bare database name given to --into) is one line with a hint,
the password masked, never libpq's trailing newline."""

from __future__ import annotations

import pytest

from drbackup.errors import ConfigError
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.connection import connect, database_of, dsn_for_database


@pytest.mark.parametrize("call", [database_of, lambda d: dsn_for_database(d, "x"), connect])
def test_malformed_dsn_is_one_line_with_a_hint(call):
    with pytest.raises(ConfigError) as raised:
        call("shop_x password=hunter2")
    message = str(raised.value)
    assert message.startswith("invalid postgres dsn ") and "\n" not in message
    assert "hunter2" not in message
    assert "postgresql://user@host:5432/dbname" in raised.value.hint


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("host=db password=s3cret dbname=app", "host=db password=*** dbname=app"),
        ("host=db password = 's3 cr\\'et' dbname=app", "host=db password = *** dbname=app"),
        ("postgresql://app@db/app?password=s3cret&sslmode=require",
         "postgresql://app@db/app?password=***&sslmode=require"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
    ],
)  # fmt: skip
def test_mask_dsn_hides_every_form_of_password(dsn, shown):
    assert mask_dsn(dsn) == shown
