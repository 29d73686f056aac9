"""The deployment files hold together: Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate), the kustomization's files and names, docker-compose.yml through
podman-compose and its references, systemd units through systemd-analyze, the shipped
configs, schedules and drill plans through drbackup's own loaders, and every alert and
dashboard expression against the metrics a real daemon's /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drbackup.config import load_config
from drbackup.drill.plan import load_plan
from drbackup.scheduler.daemon import Daemon
from tests.fixtures.prometheus import convention_problems, expression_problems, series
from tests.integration.test_daemon import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "drbackup-dashboard.json"
SYSTEMD = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent
CORE_KINDS = {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"}
CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_documents() -> dict[str, dict]:
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization()["resources"]}


# -- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    docs = k8s_documents()
    core = [str(K8S / name) for name, doc in docs.items() if doc["kind"] in CORE_KINDS]
    assert {doc["kind"] for doc in docs.values()} == CORE_KINDS | CRD_KINDS.keys()
    proc = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *core], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" passed for resource ") == len(core), proc.stdout
    for name, doc in docs.items():  # the operator's CRDs have no schema there
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == CRD_KINDS[doc["kind"]], name
            assert doc["metadata"]["name"] == "drbackup" and doc["spec"], name


def test_the_deployment_is_replicated_hardened_and_probed():
    deployment = k8s_documents()["deployment.yaml"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= container["resources"].keys()
    assert container["ports"][0]["containerPort"] == 9612
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/run/secrets", "/var/lib/drbackup"} <= mounts  # writable where needed
    assert spec["terminationGracePeriodSeconds"] >= 60 + 15  # --grace 60, docs/daemon.md
    pdb = k8s_documents()["poddisruptionbudget.yaml"]
    labels = spec.get("labels") or deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_kustomization_names_files_that_exist_and_secrets_the_config_uses(tmp_path):
    kust = kustomization()
    generated = {g["name"]: g["files"] for g in kust["configMapGenerator"]}
    for files in generated.values():
        assert all((K8S / f).is_file() for f in files), files
    (secret,) = kust["secretGenerator"]
    secret_keys = {Path(f).name for f in secret["files"]}
    spec = k8s_documents()["deployment.yaml"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    used_maps = {v["configMap"]["name"] for v in volumes.values() if "configMap" in v}
    assert used_maps == generated.keys()
    assert volumes["secrets"]["secret"]["secretName"] == secret["name"]
    env_keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in spec["containers"][0]["env"]
        if "valueFrom" in e
    }
    config_text = (K8S / "config" / "drbackup.yaml").read_text()
    assert set(re.findall(r"/run/secrets/([\w.-]+)", config_text)) | env_keys <= secret_keys


@pytest.mark.parametrize(
    ("config", "schedules", "plans"),
    [
        ("deploy/kubernetes/config/drbackup.yaml", "deploy/kubernetes/config/schedules", []),
        ("deploy/compose/drbackup.yaml", "deploy/compose/schedules", []),
        ("drbackup.example.yaml", "schedules", ["drills/monthly.yaml"]),
    ],
    ids=["kubernetes", "compose", "example"],
)
def test_shipped_configs_schedules_and_plans_load(config, schedules, plans, tmp_path, monkeypatch):
    """drbackup's own loaders accept them (secret paths pointed at stand-in files)."""
    text = (ROOT / config).read_text()
    for name in set(re.findall(r"/run/secrets/([\w.-]+)", text)):
        (tmp_path / name).write_text("stand-in secret\n")
    copy = tmp_path / "drbackup.yaml"
    copy.write_text(text.replace("/run/secrets/", f"{tmp_path}/"))
    monkeypatch.delenv("DRBACKUP_CONFIG", raising=False)
    cfg = load_config(str(copy))
    schedule = Daemon(cfg, str(ROOT / schedules), listen=None).load()
    assert schedule.jobs
    for job in schedule.jobs:
        plan = getattr(job.spec, "plan", None)
        if plan and not plan.startswith("/etc/drbackup/drills/"):  # the image's plan
            plans.append(plan)
    for plan in plans:
        assert load_plan(str(ROOT / plan), cfg).targets


# -- compose ---------------------------------------------------------------------------------

COMPOSE_KEYS = {"name", "services", "secrets", "volumes", "networks", "configs"}


def test_compose_file_is_valid_for_podman_compose_and_self_consistent(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "deploy", project / "deploy")
    shutil.copy(COMPOSE, project / "docker-compose.yml")
    subprocess.run([str(project / "deploy/compose/make-secrets")], check=True, capture_output=True)
    proc = subprocess.run(
        [str(BIN / "podman-compose"), "-f", "docker-compose.yml", "config"],
        capture_output=True, text=True, cwd=project,
    )  # fmt: skip
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose) <= COMPOSE_KEYS
    services = compose["services"]
    assert {"postgres", "minio", "minio-setup", "drbackup", "prometheus"} <= services.keys()
    for name, service in services.items():
        assert "image" in service, name
        assert set(service.get("depends_on", {})) <= services.keys(), name
        assert set(service.get("secrets", [])) <= compose["secrets"].keys(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    assert services["drbackup"]["command"][0] == "daemon"
    assert "--with-lock" in services["minio-setup"]["command"][0]  # the repository bucket
    assert "version enable local/media" in services["minio-setup"]["command"][0]
    # bucket history: MinIO's webhook posts media's changes to the daemon's events endpoint,
    # with the token the daemon's config reads (both from the secret events-token)
    setup = services["minio-setup"]["command"][0]
    assert "endpoint=http://drbackup:9612/events/media" in setup
    assert "arn:minio:sqs::drbackup:webhook --event put,delete" in setup
    assert "events-token" in services["minio-setup"]["secrets"]
    assert "events-token" in services["drbackup"]["secrets"]
    daemon_config = yaml.safe_load((ROOT / "deploy/compose/drbackup.yaml").read_text())
    assert daemon_config["minio"]["media"]["events_token_file"] == "/run/secrets/events-token"


# -- systemd ---------------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    units = sorted(SYSTEMD.iterdir())
    assert {u.name for u in units} == {
        "drbackup.service",
        "drbackup-report.service",
        "drbackup-report.timer",
        "drbackup-drill.service",
        "drbackup-drill.timer",
    }
    for unit in units:  # verify checks ExecStart= exists: point it at this venv's drbackup
        text = unit.read_text().replace("/opt/drbackup/bin/drbackup", str(BIN / "drbackup"))
        (tmp_path / unit.name).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *[f"./{u.name}" for u in units]],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# -- alerts and dashboard against a real daemon's metrics ------------------------------------


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> str:
    """A real ``drbackup daemon``'s /metrics, with a history in its catalog (a backup, a
    snapshot, a drill, a WAL check) and scheduled jobs, and a target whose WAL it streams
    (its server is down), so that every series it can export has samples."""
    tmp = tmp_path_factory.mktemp("metrics")
    config = tmp / "drbackup.yaml"
    catalog_url = f"sqlite:///{tmp}/c"
    targets = {
        "postgres": {
            "app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]},
            "pitr": {
                "dsn": "postgresql://x@127.0.0.1:1/p",
                "databases": "all",
                "backup_kinds": ["physical"],
            },
        },
        "minio": {"media": {"endpoint": "http://127.0.0.1:1", "buckets": ["media"]}},
    }
    config.write_text(
        yaml.safe_dump(
            {"repository": {"url": str(tmp / "repo")}, "catalog": catalog_url, **targets}
        )
    )
    seed_catalog(catalog_url)
    schedules = tmp / "schedules"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(
        "jobs:\n"
        '  report: {kind: report, cron: "0 0 1 1 *"}\n'
        '  nightly: {kind: backup, cron: "0 0 1 1 *"}\n'
        '  buckets: {kind: snapshot, cron: "0 0 1 1 *"}\n'
    )
    daemon = DaemonProcess(config, schedules)
    try:
        status, text = daemon.get("/metrics")
    finally:
        daemon.stop()
    assert status == 200
    return text


def seed_catalog(url: str) -> None:
    """What earlier runs leave in a catalog: a backup, a snapshot, a drill from the CLI, a
    WAL check that saw the streaming slot."""
    from datetime import UTC, datetime, timedelta

    from drbackup.catalog import Catalog
    from drbackup.catalog.drills import record_drill
    from tests.integration.test_daemon_metrics import drill_report

    now = datetime.now(UTC)
    with Catalog.open(url) as catalog:
        for kind, target in (("backup", "app"), ("snapshot", "media")):
            catalog.record_run(kind, target, now - timedelta(minutes=5), now, "ok")
        record_drill(catalog, drill_report("pass", now - timedelta(days=1), 42.0))
        slot = {"name": "drbackup_pitr", "exists": True, "active": True, "retained_bytes": 1 << 24}
        window = {"oldest": (now - timedelta(days=1)).isoformat(), "newest": now.isoformat()}
        details = {"window": window, "lag_seconds": 3.0, "gaps": [], "breaks": [], "slot": slot,
                   "slot_max_retained": 1 << 30}  # fmt: skip
        catalog.record_run("wal-check", "pitr", now, now, "ok", details=details)


@pytest.fixture(scope="module")
def exported_metrics(scraped) -> set[str]:
    """Every sample name the daemon declares (some have samples only after jobs ran)."""
    names = {
        f"{f.name}_total" if f.type == "counter" else f.name for f in families_of(scraped).values()
    }
    assert "drbackup_last_success_timestamp_seconds" in names
    return names


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bdrbackup_[a-z0-9_]+\b", expr))


def test_alerts_use_only_metrics_the_daemon_exports(exported_metrics, scraped):
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"DrbackupBackupOlderThanRPO", "DrbackupDrillFailed", "DrbackupDrillStale"} <= names
    assert {"DrbackupRepositoryUnreachable", "DrbackupSnapshotCaptureLagging"} <= names
    assert {"DrbackupDrillOverRTO"} <= names
    for rule in rules:
        used = metrics_in(rule["expr"])
        assert used, rule["alert"]  # no rule on something the daemon does not say
        assert used <= exported_metrics, (rule["alert"], used - exported_metrics)
        # every selector, label matcher and grouping selects real series of that /metrics
        assert expression_problems(rule["expr"], series(scraped)) == [], rule["alert"]
    operator = k8s_documents()["prometheusrule.yaml"]
    assert operator["spec"] == yaml.safe_load(ALERTS.read_text())  # the same alerts


def test_the_dashboard_uses_only_metrics_the_daemon_exports(exported_metrics, scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        used = metrics_in(expr)
        assert used and used <= exported_metrics, (expr, used - exported_metrics)
        if used <= set(series(scraped)):  # with samples here: its labels are checked too
            assert expression_problems(expr, series(scraped)) == [], expr


def test_a_rule_on_a_metric_the_daemon_lacks_is_caught(exported_metrics, scraped):
    assert not metrics_in("drbackup_wal_lag_seconds > 60") <= exported_metrics
    exported = series(scraped)
    assert expression_problems('drbackup_runs_total{kind="bakup"}', exported) == [
        'drbackup_runs_total{kind="bakup"}: matches no series'
    ]
    assert expression_problems("max by (job) (drbackup_drill_passed)", exported) == [
        "by/on (job): no series of the expression has it"
    ]
    assert expression_problems("drbackup_drill_rto_seconds > 3600", exported) == [
        "drbackup_drill_rto_seconds: no such series"
    ]


def test_the_daemon_metrics_follow_the_prometheus_conventions(scraped):
    """Names, types and units, read back with prometheus_client's parser."""
    assert convention_problems(scraped) == []
    found = families_of(scraped)
    assert found["drbackup_runs"].type == "counter"  # failed runs: a counter, not a 24h gauge
    assert found["drbackup_drill_measured_rto_seconds"].type == "gauge"
    assert found["drbackup_rto_objective_seconds"].type == "gauge"
    assert not [name for name in series(scraped) if name.endswith("_created")]
    # the measured time and the objective are separate series of one target
    assert series(scraped)["drbackup_drill_measured_rto_seconds"] == [{"target": "app"}]
    assert {"target": "app"} in series(scraped)["drbackup_rto_objective_seconds"]


def test_the_convention_check_catches_what_it_is_for():
    bad = (
        "# HELP drbackup_failed_runs_24h failed runs\n# TYPE drbackup_failed_runs_24h gauge\n"
        "drbackup_failed_runs_24h 1\n"
        "# HELP drbackup_restore_ms restore\n# TYPE drbackup_restore_ms gauge\n"
        "drbackup_restore_ms 1\n"
        "# HELP drbackup_x_total x\n# TYPE drbackup_x_total counter\ndrbackup_x_total 1\n"
        "drbackup_x_created 1.7e9\n"
    )
    problems = convention_problems(bad)
    assert any("time window" in p for p in problems if p.startswith("drbackup_failed_runs_24h"))
    assert any("base unit" in p for p in problems if p.startswith("drbackup_restore_ms"))
    assert any("counter or histogram part" in p for p in problems if "_x_created" in p)


def families_of(text: str) -> dict:
    from tests.fixtures.prometheus import families

    return families(text)
