"""``drbackup daemon`` as a real process: second-level cron against a real PostgreSQL and the
moto S3 repository.

Backups, snapshots, drills, verifies and reports run on schedule and ``/metrics`` shows
them; SIGKILL mid-backup leaves the repository valid and the next run succeeds; a timeout
leaves no manifest; a missed window after downtime runs once; two replicas sharing a
PostgreSQL catalog never run a fire twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drbackup.actions.context import AppContext
from drbackup.catalog import Catalog
from drbackup.config import load_config
from drbackup.scheduler.locks import JOB_RUN_KIND
from drbackup.scheduler.schedule import build_trigger, previous_fire_time
from tests.e2e.conftest import cli_argv, make_repo_config, minio_target, wait_for

STARTUP = 30.0  # seconds a daemon may take to start and run its first job on 2 cores


# -- a daemon process and its JSON log ----------------------------------------------------


class DaemonProcess:
    """``drbackup daemon`` as a child; its stderr parsed into events as they come."""

    def __init__(self, config: Path, schedules: Path, *extra: str):
        argv = cli_argv(
            "--config", str(config), "daemon", "--schedules", str(schedules),
            "--listen", "127.0.0.1:0", *extra,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.events: list[dict] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.raw.append(line)
            with contextlib.suppress(ValueError):  # not every line is ours (tracebacks)
                self.events.append(json.loads(line))

    def wait_event(self, event: str, timeout: float = STARTUP, **fields) -> dict:
        def found():
            exited = self.proc.poll() is not None and not self._reader.is_alive()
            match = next(
                (
                    e
                    for e in list(self.events)
                    if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
                ),
                None,
            )
            if match is None and exited:
                pytest.fail(f"daemon exited ({self.proc.returncode}):\n{''.join(self.raw)}")
            return match

        return wait_for(found, timeout, f"{event} {fields} in the daemon log", interval=0.05)

    def count(self, event: str, **fields) -> int:
        return sum(
            1
            for e in list(self.events)
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        )

    @property
    def address(self) -> str:
        return self.wait_event("listening")["address"]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple, float]:
        text = self.get("/metrics")[1]
        return {
            (s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(config: Path, schedules: Path, *extra: str) -> DaemonProcess:
        started.append(DaemonProcess(config, schedules, *extra))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


# -- the setting --------------------------------------------------------------------------


@pytest.fixture
def setting(request, tmp_path, monkeypatch, pg_db):
    """An S3 repository on moto, target ``app`` on ``pg_db`` with a little data."""
    pg_db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text);"
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 2000) g"
    )
    cfg = make_repo_config("s3", request, tmp_path, monkeypatch, pg_db.dsn)
    cfg.data["postgres"]["app"]["rpo"] = "1h"
    cfg.data["drill"] = {"scratch_on_source_server": True}  # drills: the session cluster
    cfg.write()
    return cfg


def run_once(config: Path, schedules: Path, job: str) -> subprocess.CompletedProcess:
    argv = cli_argv("--config", str(config), "daemon", "--schedules", str(schedules), "--once", job)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def write_schedule(directory: Path, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "jobs.yaml").write_text(textwrap.dedent(text))
    return directory


def app_of(cfg) -> AppContext:
    return AppContext(load_config(str(cfg.path)))


def job_rows(catalog_url: str, job: str):
    with Catalog.open(catalog_url) as catalog:
        return catalog.runs(kind=JOB_RUN_KIND, target=job)


def manifests(cfg) -> list:
    return app_of(cfg).repository().list_refs("app")


class TableLock:
    """Hold ACCESS EXCLUSIVE on a table: pg_dump (and the fingerprint) wait behind it."""

    def __init__(self, dsn: str, table: str):
        self.conn = psycopg.connect(dsn)
        self.conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def waiters(self) -> int:
        with psycopg.connect(self.conn.info.dsn, autocommit=True) as other:
            return other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()[0]

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def other_sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()[0]


# -- on schedule --------------------------------------------------------------------------


def test_jobs_run_on_schedule_and_metrics_show_them(setting, daemons, tmp_path, s3_server):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="media-src")
    s3.put_object(Bucket="media-src", Key="photos/a.jpg", Body=b"jpeg" * 100)
    setting.data["minio"] = {"media": minio_target(s3_server, tmp_path, ["media-src"])}
    setting.write()
    prom = tmp_path / "textfile" / "drbackup.prom"
    schedules = write_schedule(
        tmp_path / "schedules",
        f"""
        jobs:
          backups: {{kind: backup, cron: "*/2 * * * * *", timeout: 60}}
          buckets: {{kind: snapshot, cron: "*/3 * * * * *", timeout: 60}}
          drills: {{kind: drill, cron: "*/4 * * * * *", timeout: 120}}
          verify: {{kind: verify, cron: "*/3 * * * * *", timeout: 60}}
          report: {{kind: report, cron: "*/2 * * * * *", output: "{prom}", notify: never}}
        """,
    )
    daemon = daemons(setting.path, schedules, "--grace", "20")
    assert daemon.get("/healthz") == (200, "ok\n")
    for job in ("backups", "buckets", "drills", "verify", "report"):
        daemon.wait_event("job_finished", job=job, status="ok", timeout=90)
    wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    metrics = daemon.metrics()
    for kind, target in [("backup", "app"), ("snapshot", "media"), ("drill", "app"),
                         ("verify", "app"), ("report", "(all)")]:  # fmt: skip
        key = ("drbackup_last_success_timestamp_seconds", ("kind", kind), ("target", target))
        assert metrics[key] > time.time() - 120, key
    assert metrics[("drbackup_last_stored_bytes", ("kind", "backup"), ("target", "app"))] > 0
    assert metrics[("drbackup_drill_passed", ("target", "app"))] == 1
    assert metrics[("drbackup_drill_measured_rto_seconds", ("target", "app"))] > 0
    assert metrics[("drbackup_rto_objective_seconds", ("target", "app"))] == 3600
    assert metrics[("drbackup_repository_up",)] == 1
    assert metrics[("drbackup_job_runs_total", ("job", "backups"), ("status", "ok"))] >= 1

    # The report job wrote a textfile that the node exporter can read.
    names = {f.name for f in text_string_to_metric_families(prom.read_text())}
    assert "drbackup_health_report_severity" in names

    # SIGHUP reloads; a broken file keeps the old schedules.
    (schedules / "jobs.yaml").write_text("jobs: {only: {kind: report, cron: '0 0 1 1 *'}}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_event("reloaded", jobs=1)
    (schedules / "jobs.yaml").write_text("jobs: {only: {kind: report}}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert "at 'cron': required" in daemon.wait_event("reload_failed")["error"]

    assert daemon.stop() == 0
    daemon.wait_event("stopped")
    with Catalog.open(setting.data["catalog"]) as catalog:
        backups = catalog.runs(kind="backup", target="app", status="ok")
    assert backups and all(len(json.dumps(r.details or {})) < 4000 for r in backups)


# -- crashes, timeouts, stops -------------------------------------------------------------


def test_sigkill_mid_backup_leaves_a_valid_repository(setting, daemons, tmp_path, pg_db):
    schedules = write_schedule(
        tmp_path / "schedules", 'jobs: {nightly: {kind: backup, cron: "*/2 * * * * *"}}\n'
    )
    lock = TableLock(pg_db.dsn, "orders")
    try:
        first = daemons(setting.path, schedules)
        run_id = first.wait_event("job_started", job="nightly")["run_id"]
        wait_for(lambda: lock.waiters() >= 1, 30, "the backup to wait on the table lock")
        first.kill()  # SIGKILL: no cleanup in the daemon
    finally:
        lock.release()
    # The worker died with its daemon: its sessions end and no manifest ever appears.
    wait_for(lambda: other_sessions(pg_db.dsn) == 0, 30, "the killed backup's sessions to end")
    assert manifests(setting) == []

    second = daemons(setting.path, schedules)
    second.wait_event("run_abandoned", run_id=run_id)
    finished = second.wait_event("job_finished", job="nightly", status="ok")
    assert second.stop() == 0
    refs = manifests(setting)
    assert refs and refs[-1].backup_id in json.dumps(second.events)
    from drbackup.actions.repository import verify_backup

    assert verify_backup(app_of(setting), refs[-1].backup_id).problems == []
    rows = {r.id: r for r in job_rows(setting.data["catalog"], "nightly")}
    assert rows[run_id].status == "failed" and "abandoned" in rows[run_id].error
    assert rows[finished["run_id"]].status == "ok"


def test_timeout_stops_the_backup_and_leaves_no_manifest(setting, tmp_path, pg_db):
    schedules = write_schedule(
        tmp_path / "schedules",
        "jobs: {slow: {kind: backup, cron: '0 0 1 1 *', timeout: 2, retry: {attempts: 1}}}\n",
    )
    lock = TableLock(pg_db.dsn, "orders")
    try:
        proc = run_once(setting.path, schedules, "slow")
        err = proc.stderr
    finally:
        lock.release()
    assert proc.returncode == 1
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = next(e for e in events if e["event"] == "run_failed")
    assert (failed["error"], failed["error_kind"]) == ("timed out after 2s", "timeout")
    assert err.splitlines()[-2:] == [
        "drbackup: error: job 'slow' failed",
        "hint: the JSON log above says why",
    ]
    assert manifests(setting) == []
    with Catalog.open(setting.data["catalog"]) as catalog:
        runs = catalog.runs(kind="backup", target="app")
    assert [r.status for r in runs] == ["failed"]  # recorded once: by the unwinding action


def test_sigterm_abandons_a_run_after_the_grace(setting, daemons, tmp_path, pg_db):
    schedules = write_schedule(
        tmp_path / "schedules", 'jobs: {nightly: {kind: backup, cron: "*/2 * * * * *"}}\n'
    )
    lock = TableLock(pg_db.dsn, "orders")
    try:
        daemon = daemons(setting.path, schedules, "--grace", "1")
        run_id = daemon.wait_event("job_started", job="nightly")["run_id"]
        wait_for(lambda: lock.waiters() >= 1, 30, "the backup to wait on the table lock")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 20
    finally:
        lock.release()
    failed = daemon.wait_event("run_failed", run_id=run_id)
    assert failed["error"] == "abandoned: the daemon is stopping"
    assert manifests(setting) == []
    (row,) = [r for r in job_rows(setting.data["catalog"], "nightly") if r.id == run_id]
    assert row.status == "failed"


# -- missed runs and replicas -------------------------------------------------------------


def test_a_missed_window_after_downtime_runs_once(setting, daemons, tmp_path):
    cron = "*/2 * * * * *"
    schedules = write_schedule(
        tmp_path / "schedules",
        f'jobs: {{health: {{kind: report, cron: "{cron}", notify: never}}}}\n',
    )
    once = run_once(setting.path, schedules, "health")
    assert once.returncode == 0, once.stderr  # the report job succeeds whatever its status
    (before,) = job_rows(setting.data["catalog"], "health")
    # Downtime: wait until at least two fire times passed since that run.
    trigger = build_trigger(cron)
    wait_for(
        lambda: (
            previous_fire_time(trigger, datetime.now(UTC))
            >= before.started_at + timedelta(seconds=4)
        ),
        30,
        "two missed fire times",
    )
    daemon = daemons(setting.path, schedules)
    missed = daemon.wait_event("missed_run", job="health")
    daemon.wait_event("job_finished", job="health")
    assert daemon.stop() == 0
    rows = job_rows(setting.data["catalog"], "health")
    catch_up = [r for r in rows if r.details["reason"] == "catch-up"]
    assert len(catch_up) == 1
    assert catch_up[0].started_at.isoformat() == missed["scheduled_at"]
    # Nothing ran for the fire times between the last run and the catch-up one.
    assert not [r for r in rows if before.started_at < r.started_at < catch_up[0].started_at]


def test_two_replicas_on_a_postgresql_catalog_never_run_a_fire_twice(
    setting, daemons, tmp_path, pg_cluster
):
    name = f"catalog_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    try:
        setting.data["catalog"] = pg_cluster.dsn(name)
        setting.write()
        schedules = write_schedule(
            tmp_path / "schedules",
            'jobs: {nightly: {kind: backup, cron: "*/2 * * * * *", timeout: 60}}\n',
        )
        a = daemons(setting.path, schedules)
        b = daemons(setting.path, schedules)

        def fires_done() -> bool:
            done = [r for r in job_rows(setting.data["catalog"], "nightly") if r.status == "ok"]
            claimed = "this fire was already claimed"
            lost = a.count("job_skipped", reason=claimed) + b.count("job_skipped", reason=claimed)
            return len(done) >= 3 and lost >= 1

        # Backups of one target serialize (target locks), so fires pile up: both replicas
        # try each fire, one claims it; the other logs that it lost the claim.
        wait_for(fires_done, 120, "three fires run and a replica losing a claim", 0.2)
        assert a.stop() == 0 and b.stop() == 0
        rows = job_rows(setting.data["catalog"], "nightly")
        per_fire = Counter(r.started_at for r in rows)
        assert max(per_fire.values()) == 1  # one claim per fire time
        replicas = {r.details["replica"] for r in rows}
        with Catalog.open(setting.data["catalog"]) as catalog:
            backups = catalog.runs(kind="backup", target="app")
        ok_fires = [r for r in rows if r.status == "ok"]
        ok_backups = [r for r in backups if r.status == "ok"]
        assert len(ok_fires) >= 3 and len(ok_backups) == len(ok_fires)
        assert len(manifests(setting)) == len(ok_backups)
        assert replicas  # each row names the replica that ran it
    finally:
        pg_cluster.drop_database(name)


# -- retries, in process ------------------------------------------------------------------


class FlakyRunner:
    """Fails the first ``failures`` attempts, then succeeds; records when each started."""

    def __init__(self, failures: int):
        self.failures = failures
        self.starts: list[float] = []

    def run(self, config, job, target, timeout, cancel_at):
        from drbackup.scheduler.jobs import ActionError, Outcome

        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise ActionError(f"attempt {len(self.starts)} failed", kind="SourceError")
        return Outcome(backup_id="20261123T000000Z-abcdef", source_bytes=10, stored_bytes=5)


def test_retries_with_backoff_and_records_the_job(tmp_path, monkeypatch):
    from drbackup.config import Config
    from drbackup.scheduler.daemon import Daemon

    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    config = Config.model_validate(
        {
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {"app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]}},
        }
    )
    schedules = write_schedule(
        tmp_path / "schedules",
        "jobs: {nightly: {kind: backup, cron: '0 1 * * *',"
        " retry: {attempts: 3, backoff: 1, max_backoff: 1}}}\n",
    )
    runner = FlakyRunner(failures=2)
    daemon = Daemon(config, str(schedules), runner=runner)
    assert daemon.run_once("nightly") == "ok"
    assert len(runner.starts) == 3
    gaps = [b - a for a, b in zip(runner.starts, runner.starts[1:], strict=False)]
    assert all(gap >= 1 for gap in gaps)  # backoff 1s, doubled but capped at 1s
    (row,) = job_rows(config.catalog, "nightly")
    assert (row.status, row.details["reason"]) == ("ok", "once")
    assert row.details["results"]["app"]["attempts"] == 3
    metrics = {
        (s.name, *sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(daemon.metrics.render().decode())
        for s in f.samples
    }
    assert metrics[("drbackup_run_failures_total", ("kind", "backup"), ("target", "app"))] == 2
    assert metrics[("drbackup_last_stored_bytes", ("kind", "backup"), ("target", "app"))] == 5


class FailedDrillRunner:
    def run(self, config, job, target, timeout, cancel_at):
        from drbackup.scheduler.jobs import ActionError

        error = ActionError("drill 1 failed (1 of 9 checks): app tables: rows differ")
        error.details = {"passed": False, "rto_seconds": 12.5}
        raise error


def test_a_failed_drill_fails_the_job_and_sets_the_metrics(tmp_path, monkeypatch):
    from drbackup.config import Config
    from drbackup.scheduler.daemon import Daemon

    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    config = Config.model_validate(
        {
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {"app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]}},
        }
    )
    schedules = write_schedule(
        tmp_path / "schedules", "jobs: {d: {kind: drill, cron: '0 5 1 * *'}}\n"
    )
    daemon = Daemon(config, str(schedules), runner=FailedDrillRunner())
    assert daemon.run_once("d") == "failed"
    (row,) = job_rows(config.catalog, "d")
    assert row.error == "app: drill 1 failed (1 of 9 checks): app tables: rows differ"
    text = daemon.metrics.render().decode()
    assert 'drbackup_drill_passed{target="app"} 0.0' in text
    assert 'drbackup_drill_measured_rto_seconds{target="app"} 12.5' in text


# -- heartbeats ---------------------------------------------------------------------------


@pytest.fixture
def sink():
    from tests.fixtures.httpsink import start_sink

    sink, server = start_sink()
    yield sink
    server.shutdown()
    server.server_close()


def test_heartbeats_ping_at_start_success_and_failure(setting, daemons, tmp_path, sink):
    # a second target whose server is not there: its backups fail (connection refused)
    setting.data["postgres"]["gone"] = {
        "dsn": "postgresql://backup@127.0.0.1:1/gone",
        "databases": ["gone"],
    }
    setting.write()
    secret = tmp_path / "hc-bad"
    secret.write_text(f"{sink.url}/ping/bad-uuid\n")
    schedules = write_schedule(
        tmp_path / "schedules",
        f"""
        jobs:
          good:
            kind: backup
            targets: [app]
            cron: "*/3 * * * * *"
            heartbeat: {sink.url}/ping/good-uuid
          bad:
            kind: backup
            targets: [gone]
            cron: "*/3 * * * * *"
            heartbeat: {{url_file: {secret}, timeout: 5s}}
        """,
    )
    daemon = daemons(setting.path, schedules)
    daemon.wait_event("job_finished", job="good", status="ok", timeout=STARTUP + 30)
    daemon.wait_event("job_finished", job="bad", status="failed", timeout=STARTUP + 30)

    def pings_of(job: str) -> list[str]:
        return [r.path for r in sink.requests if r.path.startswith(f"/ping/{job}-uuid")]

    wait_for(lambda: len(pings_of("good")) >= 2 and len(pings_of("bad")) >= 2, 30, "pings")
    assert daemon.stop() == 0
    good, bad = pings_of("good"), pings_of("bad")
    # every run: /start first, then its outcome; runs do not overlap
    assert good[:2] == ["/ping/good-uuid/start", "/ping/good-uuid"]
    assert bad[:2] == ["/ping/bad-uuid/start", "/ping/bad-uuid/fail"]
    assert all(r.method == "POST" for r in sink.requests)
    failure = next(r for r in sink.requests if r.path == "/ping/bad-uuid/fail")
    assert failure.text.startswith("run ") and "of job bad: gone: " in failure.text
    success = next(r for r in sink.requests if r.path == "/ping/good-uuid")
    assert success.text.endswith("of job good: ok")
    assert daemon.count("heartbeat_failed") == 0


def test_a_monitor_that_is_down_never_fails_the_job(tmp_path, monkeypatch, sink, caplog):
    from drbackup.config import Config
    from drbackup.scheduler.daemon import Daemon

    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    config = Config.model_validate(
        {
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {"app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]}},
        }
    )
    sink.status = 503
    schedules = write_schedule(
        tmp_path / "schedules",
        "jobs:\n"
        f"  up: {{kind: backup, cron: '0 1 * * *', heartbeat: '{sink.url}/p/T0KEN'}}\n"
        "  down: {kind: backup, cron: '0 1 * * *', heartbeat: 'http://127.0.0.1:1/p/T0KEN'}\n",
    )
    daemon = Daemon(config, str(schedules), runner=FlakyRunner(failures=0))
    caplog.set_level(logging.WARNING, logger="drbackup.daemon")
    assert daemon.run_once("up") == "ok"
    assert daemon.run_once("down") == "ok"
    assert [r.path for r in sink.requests] == ["/p/T0KEN/start", "/p/T0KEN"]
    failed = [r.fields for r in caplog.records if getattr(r, "event", "") == "heartbeat_failed"]
    assert [(f["job"], f["ping"]) for f in failed] == [
        ("up", "start"),
        ("up", "success"),
        ("down", "start"),
        ("down", "success"),
    ]
    errors = [f["error"] for f in failed]
    assert (
        errors[0] == "heartbeat http://127.0.0.1 answered 503 service unavailable to the start ping"
    )
    assert errors[2].startswith("heartbeat http://127.0.0.1 unreachable for the start ping: ")
    assert not any("T0KEN" in e for e in errors)
