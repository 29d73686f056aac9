"""drbackup.config: loading, validation messages, environment, secrets, redaction, docs."""

import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from drbackup.config import Config, format_validation_error, load_config, redacted_dict
from drbackup.config.docs import render, schema_docs
from drbackup.config.types import format_duration, format_size, parse_duration, parse_size
from drbackup.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[3]
APP = "postgres:\n  app: {dsn: 'postgresql://backup@db:5432/app', databases: [app]}\n"


@pytest.fixture
def home(tmp_path):
    return {"HOME": str(tmp_path / "home")}


def write(tmp_path: Path, text: str, name: str = "drbackup.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def secret_file(tmp_path: Path, value: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def load_error(path: str, env: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value


def error_lines(tmp_path: Path, text: str, env: dict | None = None) -> list[str]:
    path = write(tmp_path, text)
    return str(load_error(path, env)).replace(path, "<path>").splitlines()


# -- defaults and the file -------------------------------------------------------------


def test_defaults_without_a_file():
    cfg = load_config(env={"DRBACKUP_HOME": "/srv/drb"})
    assert cfg.repository.url == "/srv/drb/repo"
    assert cfg.catalog == "sqlite:////srv/drb/catalog.db"
    assert (cfg.postgres, cfg.minio, cfg.source) == ({}, {}, None)
    assert cfg.repository.compression.level == 1
    assert cfg.repository.encryption.method is None


def test_defaults_under_home_share():
    cfg = load_config(env={"HOME": "/home/ops"})
    assert cfg.repository.url == "/home/ops/.local/share/drbackup/repo"
    assert cfg.catalog == "sqlite:////home/ops/.local/share/drbackup/catalog.db"


def test_empty_file_means_defaults(tmp_path):
    path = write(tmp_path, "")
    cfg = load_config(path, env={"DRBACKUP_HOME": "/srv/drb"})
    assert cfg.repository.url == "/srv/drb/repo" and cfg.source == path


def test_path_from_drbackup_config(tmp_path, home):
    path = write(tmp_path, "repository: {url: /srv/repo}\n")
    assert load_config(env={**home, "DRBACKUP_CONFIG": path}).repository.url == "/srv/repo"


def test_missing_file(tmp_path):
    error = load_error(str(tmp_path / "nope.yaml"))
    assert str(error) == f"config file not found: {tmp_path / 'nope.yaml'}"
    assert error.hint == (
        "pass an existing file or set DRBACKUP_CONFIG; drbackup.example.yaml shows the format"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "postgres:\n  app: [\n",
            "invalid yaml at line 3, column 1: expected the node content, but found '<stream end>'",
        ),
        ("drill: {}\ndrill: {}\n", "invalid yaml at line 2, column 1: duplicate key 'drill'"),
        ("- a\n- b\n", "expected a mapping of sections, got list"),
        # YAML 1.1 reads these keys as booleans, numbers, null: a target must be named.
        (
            "postgres:\n  off: {dsn: x}\n",
            "invalid yaml at line 2, column 3: key 'off' is read as a boolean: quote it ('off')",
        ),
        (
            "postgres:\n  2024: {dsn: x}\n",
            "invalid yaml at line 2, column 3: key '2024' is read as a number: quote it ('2024')",
        ),
        (
            "postgres:\n  2026-11-01: {dsn: x}\n",
            "invalid yaml at line 2, column 3: key '2026-11-01' is read as a date: "
            "quote it ('2026-11-01')",
        ),
        (
            "minio:\n  ~: {}\n",
            "invalid yaml at line 2, column 3: key '~' is read as null: quote it ('~')",
        ),
        (
            "postgres:\n  ? [a]\n  : 1\n",
            "invalid yaml at line 2, column 5: a key must be a name, not a list or mapping",
        ),
    ],
)
def test_unparsable_file_is_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    assert str(load_error(path)) == f"config {path}: {message}"


# -- validation messages ---------------------------------------------------------------


def test_every_error_is_reported_with_its_path(tmp_path, home):
    lines = error_lines(
        tmp_path,
        """\
        repository:
          urll: /srv/repo
          compression: {level: 30}
        postgres:
          app: {dsn: "host=db", databases: [app], rpo: 24x, fingerprint: sometimes}
          Bad!: {dsn: "host=db", databases: all}
        minio:
          media: {endpoint: "minio:9000", buckets: [Media]}
        """,
        home,
    )
    assert lines == [
        "config <path> has 6 errors",
        "at 'repository.compression.level': input should be less than or equal to 22",
        "at 'repository.urll': unknown key (did you mean 'url'?)",
        "at 'postgres.app.rpo': invalid duration '24x' (use e.g. 30s, 15m, 24h, 7d)",
        "at 'postgres.app.fingerprint': input should be 'off', 'counts' or 'full'",
        "at 'postgres.Bad!': invalid target name 'Bad!' (use up to 63 of a-z, 0-9, '_', '.', "
        "'-', starting with a letter or digit)",
        "at 'minio.media.buckets[0]': invalid bucket name 'Media' (use 3-63 of a-z, 0-9, '.', '-')",
    ]


def test_unknown_key_lists_known_keys_without_a_close_match(tmp_path, home):
    assert error_lines(tmp_path, "colour: red\n", home)[1:] == [
        "at 'colour': unknown key (known keys: repository, catalog, postgres, minio, drill, notifications, groups)"
    ]


def test_missing_and_invalid_target_keys(tmp_path, home):
    text = "postgres:\n  app: {databases: app, pg_dump_options: [--format=d, -v]}\n"
    assert error_lines(tmp_path, text, home)[1:] == [
        "at 'postgres.app.dsn': required key is missing",
        "at 'postgres.app.databases': expected a non-empty list of database names or 'all'",
        "at 'postgres.app.pg_dump_options[0]': pg_dump option '--format=d' is set by drbackup "
        "(remove it)",
    ]


def test_target_names_are_unique_across_kinds(tmp_path, home):
    text = APP + "minio:\n  app: {endpoint: 'minio:9000', buckets: [media]}\n"
    assert error_lines(tmp_path, text, home)[1:] == [
        "at 'minio': target 'app' is also a postgres target (names must be unique)"
    ]


def test_format_validation_error():
    with pytest.raises(pydantic.ValidationError) as info:
        Config.model_validate({"postgres": {"app": {"dsn": "db", "databases": [], "jobs": 0}}})
    assert format_validation_error(info.value, "test.yaml").splitlines() == [
        "config test.yaml has 3 errors",
        "at 'postgres.app.dsn': invalid dsn (use postgresql://user@host:port/dbname or "
        "'host=... dbname=...')",
        "at 'postgres.app.databases': expected a non-empty list of database names or 'all'",
        "at 'postgres.app.jobs': input should be greater than or equal to 1",
    ]


# -- secrets ---------------------------------------------------------------------------


def test_inline_secrets_are_refused(tmp_path, home):
    lines = error_lines(
        tmp_path,
        """\
        repository:
          s3: {secret_access_key: hunter2}
          encryption: {passphrase: hunter2}
        postgres:
          app: {dsn: "postgresql://backup:hunter2@db/app", databases: [app], password: hunter2}
        drill: {signing_key: hunter2}
        """,
        home,
    )
    assert lines == [
        "config <path> has 5 errors",
        "at 'repository.s3.secret_access_key': inline secrets are not allowed "
        "(use 'secret_access_key_file' or AWS_SECRET_ACCESS_KEY)",
        "at 'repository.encryption.passphrase': inline secrets are not allowed "
        "(use 'passphrase_file' or DRBACKUP_PASSPHRASE)",
        "at 'postgres.app.password': inline secrets are not allowed "
        "(use 'password_file' or DRBACKUP__POSTGRES__APP__PASSWORD)",
        "at 'drill.signing_key': inline secrets are not allowed (use 'signing_key_file')",
        "at 'postgres.app.dsn': contains a password; inline secrets are not allowed "
        "(use 'password_file', PGPASSWORD or ~/.pgpass)",
    ]
    assert "hunter2" not in "\n".join(lines)


def test_missing_and_empty_secret_files(tmp_path, home):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    text = APP.replace("}", f", password_file: {tmp_path}/missing}}")
    text += f"repository:\n  encryption: {{passphrase_file: {empty}}}\n"
    assert error_lines(tmp_path, text, home)[1:] == [
        f"at 'repository.encryption.passphrase_file': secret file '{empty}' is empty",
        f"at 'postgres.app.password_file': cannot read '{tmp_path}/missing': "
        "no such file or directory",
    ]


def test_secret_files_are_read_without_trailing_newline(tmp_path, home):
    password = secret_file(tmp_path, "pg-pass")
    text = APP.replace("}", f", password_file: {password}}}")
    cfg = load_config(write(tmp_path, text), env=home)
    assert cfg.postgres["app"].password.get_secret_value() == "pg-pass"
    assert cfg.postgres["app"].password_file == Path(password)


def test_passphrase_from_env_conflicts_with_passphrase_file(tmp_path, home):
    passphrase = secret_file(tmp_path, "file-pass")
    env = {**home, "DRBACKUP_PASSPHRASE": "env-pass"}
    text = f"repository:\n  encryption: {{passphrase_file: {passphrase}}}\n"
    assert error_lines(tmp_path, text, env)[1:] == [
        "at 'repository.encryption': set only one of 'passphrase' (DRBACKUP_PASSPHRASE) and "
        "'passphrase_file'"
    ]
    cfg = load_config(env=env)
    assert cfg.repository.encryption.passphrase.get_secret_value() == "env-pass"
    assert cfg.repository.encryption.method == "passphrase"


def test_redaction_never_shows_a_secret(tmp_path, home):
    password = secret_file(tmp_path, "pg-sekrit")
    text = APP.replace("}", f", password_file: {password}}}")
    env = {**home, "DRBACKUP_PASSPHRASE": "env-sekrit"}
    cfg = load_config(write(tmp_path, text), env=env)
    shown = redacted_dict(cfg)
    for text in (str(shown), repr(cfg), str(cfg), str(cfg.model_dump())):
        assert "sekrit" not in text
    assert shown["postgres"]["app"]["password"] == "***"
    assert shown["postgres"]["app"]["password_file"] == password
    assert shown["repository"]["encryption"]["passphrase"] == "***"
    assert (shown["postgres"]["app"]["rpo"], shown["repository"]["s3"]["part_size"]) == (
        "24h",
        "8MiB",
    )


def test_secrets_never_reach_error_messages(tmp_path, home):
    env = {**home, "DRBACKUP_PASSPHRASE": "env-sekrit", "DRBACKUP__POSTGRES__APP__JOBS": "x"}
    error = load_error(write(tmp_path, APP), env)
    assert "sekrit" not in str(error) and error.__cause__ is None and error.__context__ is None


# -- environment -----------------------------------------------------------------------


def test_env_overrides(tmp_path, home):
    env = {
        **home,
        "DRBACKUP__REPOSITORY__URL": "s3://drbackup/staging",
        "DRBACKUP__REPOSITORY__S3__PART_SIZE": "16MiB",
        "DRBACKUP__POSTGRES__APP__DATABASES": "[app, billing]",
        "DRBACKUP__POSTGRES__APP__RPO": "1h30m",
        "DRBACKUP__POSTGRES__APP__PASSWORD": "0123",
    }
    cfg = load_config(write(tmp_path, APP), env=env)
    assert cfg.repository.url == "s3://drbackup/staging"
    assert cfg.repository.s3.part_size == 16 * 2**20
    assert cfg.postgres["app"].databases == ["app", "billing"]
    assert cfg.postgres["app"].rpo == timedelta(hours=1, minutes=30)
    assert cfg.postgres["app"].password.get_secret_value() == "0123"  # verbatim, not 123


def test_env_override_errors_name_the_variable(tmp_path, home):
    env = {**home, "DRBACKUP__POSTGRES__APP__RPO": "soon", "DRBACKUP__CATALOG__X": "1"}
    assert error_lines(tmp_path, APP, env)[1:] == [
        "at 'catalog': input should be a valid string (from DRBACKUP__CATALOG__X)",
        "at 'postgres.app.rpo': invalid duration 'soon' (use e.g. 30s, 15m, 24h, 7d) "
        "(from DRBACKUP__POSTGRES__APP__RPO)",
    ]


def test_aws_env_fills_unset_s3_keys(tmp_path, home):
    env = {
        **home,
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_SESSION_TOKEN": "token",
        "AWS_ENDPOINT_URL": "http://env:9000",
        "AWS_REGION": "eu-west-1",
    }
    text = (
        "repository:\n  url: s3://drbackup/prod\n"
        "  s3: {region: us-east-1, max_concurrency: 8, read_timeout: 20s, max_attempts: 2}\n"
    )
    assert load_config(write(tmp_path, text), env=env).repository.s3_kwargs() == {
        "endpoint_url": "http://env:9000",
        "region": "us-east-1",
        "access_key_id": "AKIA",
        "secret_access_key": "aws-secret",
        "session_token": "token",
        "path_style": True,
        "verify_tls": True,
        "part_size": 8 * 2**20,
        "max_concurrency": 8,
        "connect_timeout": 10.0,
        "read_timeout": 20.0,  # a server that never answers fails after 2 x 20 s
        "max_attempts": 2,
    }
    assert load_config(env=env).repository.s3.access_key_id is None  # local repository


def test_aws_credentials_never_mix_with_credential_files(tmp_path, home):
    key_id, secret = secret_file(tmp_path, "file-id", "id"), secret_file(tmp_path, "file-sk", "sk")
    text = f"""\
        repository:
          url: s3://drbackup/prod
          s3: {{access_key_id_file: {key_id}, secret_access_key_file: {secret}}}
        """
    env = {**home, "AWS_SECRET_ACCESS_KEY": "env-sk", "AWS_SESSION_TOKEN": "token"}
    kwargs = load_config(write(tmp_path, text), env=env).repository.s3_kwargs()
    assert (kwargs["access_key_id"], kwargs["secret_access_key"]) == ("file-id", "file-sk")
    assert (kwargs["session_token"], kwargs["path_style"]) == (None, False)


# -- targets ---------------------------------------------------------------------------


def test_target_lookup(tmp_path, home):
    cfg = load_config(write(tmp_path, APP), env=home)
    assert cfg.target("app") is cfg.postgres["app"]
    with pytest.raises(UsageError) as info:
        cfg.target("ap")
    assert (str(info.value), info.value.hint) == (
        "unknown target 'ap' (did you mean 'app'?)",
        "known targets: app",
    )
    with pytest.raises(UsageError) as info:
        load_config(env=home).target("app")
    assert info.value.hint == "no targets are configured; add one under 'postgres:' or 'minio:'"


def test_minio_client_kwargs(tmp_path, home):
    text = (
        "minio:\n  media: {endpoint: 'https://minio:9000/', buckets: [media], verify_tls: false}\n"
    )
    cfg = load_config(write(tmp_path, text), env=home)
    assert cfg.minio["media"].client_kwargs() == {
        "endpoint": "minio:9000",
        "access_key": None,
        "secret_key": None,
        "secure": True,
        "cert_check": False,
        "connect_timeout": 10.0,
        "read_timeout": 120.0,
        "max_attempts": 5,
    }
    bad = text.replace("verify_tls: false", "secure: false")
    assert error_lines(tmp_path, bad, home)[1:] == [
        "at 'minio.media': 'secure' contradicts the endpoint's scheme"
    ]


def test_databases_all_and_fingerprint_off(tmp_path, home):
    text = APP.replace("[app]", "all, fingerprint: off")
    target = load_config(write(tmp_path, text), env=home).postgres["app"]
    assert (target.databases, target.fingerprint) == ("all", "off")


# -- durations and sizes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "shown"),
    [
        ("30s", 30, "30s"),
        ("15m", 900, "15m"),
        ("24h", 86400, "24h"),
        ("1d", 86400, "24h"),
        ("7d", 604800, "7d"),
        ("1h30m", 5400, "1h30m"),
        (" 2d12h ", 216000, "60h"),
    ],
)
def test_durations(text, seconds, shown):
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert format_duration(timedelta(seconds=seconds)) == shown


@pytest.mark.parametrize("text", ["24x", "", "0s", "1.5h", "h", "30", "30m1h", "-5m"])
def test_invalid_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "size", "shown"),
    [
        ("8MiB", 8 << 20, "8MiB"),
        ("5MB", 5_000_000, "5MB"),
        (4096, 4096, "4KiB"),
        ("1.5GiB", 3 << 29, "1536MiB"),
        ("100", 100, "100B"),
        ("2 kib", 2048, "2KiB"),
        (0, 0, "0B"),
    ],
)
def test_sizes(value, size, shown):
    assert parse_size(value) == size
    assert format_size(size) == shown


@pytest.mark.parametrize("value", ["8XB", "-1", -1, "1.1B", True, "", "MiB", 1.5])
def test_invalid_sizes(value):
    with pytest.raises(ValueError):
        parse_size(value)


# -- example and docs ------------------------------------------------------------------


def test_example_config_is_valid(tmp_path, home):
    text = (ROOT / "drbackup.example.yaml").read_text()
    for name in set(re.findall(r"/run/secrets/([\w.-]+)", text)):
        secret_file(tmp_path, f"value-of-{name}", name)
    cfg = load_config(write(tmp_path, text.replace("/run/secrets/", f"{tmp_path}/")), env=home)
    assert cfg.repository.encryption.passphrase.get_secret_value() == "value-of-drbackup-passphrase"
    assert cfg.postgres["app"].rto == timedelta(minutes=15)
    assert cfg.minio["media"].rpo == timedelta(hours=1)
    assert cfg.catalog == "sqlite:////var/lib/drbackup/catalog.db"


def test_docs_are_generated_from_the_schema():
    rows = {row[0]: row for row in schema_docs()}
    assert rows["postgres.<name>.rpo"][1:3] == ("duration", "24h")
    assert rows["repository.s3.part_size"][1:3] == ("size", "8MiB")
    assert rows["postgres.<name>.databases"][2] == "required"
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert docs == render(), "run: python -m drbackup.config.docs > docs/configuration.md"
