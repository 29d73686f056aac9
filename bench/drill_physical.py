"""Physical drill next to the logical drill on a ≥ 1 GiB pgbench database (``bench/drill.py
--physical``).

A private server (``wal_level = logical``, archiving through ``drbackup wal-push``) under
/var/tmp/drbackup-bench, ``pgbench -i --foreign-keys`` at the scale that makes the database
≥ ``--size-gb``; one base backup, then one logical backup (its snapshot from a temporary
logical slot, so it records its LSN) with the full fingerprint.  Then per ``--repeat``:

    logical drill   drill run --kind logical: pg_restore into a private cluster, verified
    physical drill  drill run --kind physical (point: fingerprint): base backup + WAL to the
                    logical backup's LSN, every table compared with its fingerprint

and prints both side by side by phase, with verification / restore for each; per drill
also the 1-minute load average before and after it (the JSON has every run).  The target
(verification <= 50% of the restore) must hold in every run, not only the best.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.backup import BENCH_DIR, DRBACKUP, PASSPHRASE, SERVER_SETTINGS
from bench.common import fmt_size, render_table
from drbackup.codec import keys
from drbackup.sources.postgres.cluster import EphemeralCluster, resolve_run_as

DBNAME = "bench"
ROWS_PER_SCALE_BYTES = 15_200_000  # pgbench: about 15 MB per scale unit, indexes included
TARGET_RATIO = 0.5


def run_physical(args, machine: str) -> int:
    root = _owned_dir()
    config = _write_config(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DRBACKUP_"))}
    env |= {"DRBACKUP_CONFIG": str(config)}  # the key from the config's passphrase_file
    cluster = _start_cluster(root, config, env)
    try:
        _set_dsn(config, cluster.dsn(DBNAME))
        size = _generate(cluster, args.size_gb)
        print(f"database {DBNAME}: {fmt_size(size)}; {machine}", flush=True)
        backups = _backups(cluster, env)
        drills = []
        for number in range(args.repeat):
            for kind in ("logical", "physical"):
                drills.append(_drill(root, env, kind))
                _say(drills[-1], number + 1, args.repeat)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    _report(drills, size, backups, machine, args.json)
    return 0 if all(d["status"] != "fail" for d in drills) else 3


def _owned_dir() -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pdrill-", dir=BENCH_DIR))
    root.chmod(0o755)
    return root


def _chown(root: Path) -> None:
    run_as = resolve_run_as()
    if run_as is not None:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, run_as.uid, run_as.gid)


def _write_config(root: Path) -> Path:
    (root / "passphrase").write_text(PASSPHRASE + "\n")
    (root / "passphrase").chmod(0o600)
    (root / "signing.key").write_text(keys.b64(os.urandom(32)) + "\n")
    doc = {
        "repository": {
            "url": str(root / "repo"),
            "encryption": {"passphrase_file": str(root / "passphrase")},
        },
        "catalog": f"sqlite:///{root / 'catalog.db'}",
        "postgres": {
            "bench": {
                "dsn": "postgresql://postgres@127.0.0.1:5432/bench",
                "databases": [DBNAME],
                "fingerprint": "full",
                "rto": "1h",
                "wal": {"spool_dir": str(root / "spool")},
            }
        },
        "drill": {"signing_key_file": str(root / "signing.key")},
    }
    path = root / "drbackup.json"  # JSON is YAML
    path.write_text(json.dumps(doc))
    return path


def _set_dsn(config: Path, dsn: str) -> None:
    doc = json.loads(config.read_text())
    doc["postgres"]["bench"]["dsn"] = dsn
    config.write_text(json.dumps(doc))


def _start_cluster(root: Path, config: Path, env: dict) -> EphemeralCluster:
    _run([*DRBACKUP, "init"], env)
    _chown(root)
    push = f"{DRBACKUP[0]} -c {config} wal-push --target bench %p"
    settings = {
        **SERVER_SETTINGS,
        "wal_level": "logical",
        "archive_mode": "on",
        "archive_command": push,
        "max_wal_senders": "4",
        "max_replication_slots": "4",
    }
    return EphemeralCluster(root / "pg", settings=settings).start()


def _generate(cluster: EphemeralCluster, size_gb: float) -> int:
    scale = max(1, round(size_gb * (1 << 30) / ROWS_PER_SCALE_BYTES))
    cluster.create_database(DBNAME)
    started = time.monotonic()
    pgbench = str(cluster.bin_dir / "pgbench")
    argv = [pgbench, "-i", "-s", str(scale), "-q", "--foreign-keys", cluster.dsn(DBNAME)]
    subprocess.run(argv, check=True, capture_output=True)
    cluster.execute("VACUUM ANALYZE", dbname=DBNAME)
    print(f"pgbench -i -s {scale}: {time.monotonic() - started:.0f}s", flush=True)
    return cluster.execute("SELECT pg_database_size(%s)", params=(DBNAME,))[0][0]


def _backups(cluster: EphemeralCluster, env: dict) -> dict:
    times = {}
    for kind, extra in (("physical", ["--physical"]), ("logical", [])):
        started = time.monotonic()
        _run([*DRBACKUP, "backup", "postgres", "bench", *extra], env)
        times[kind] = time.monotonic() - started
        print(f"{kind} backup: {times[kind]:.1f}s", flush=True)
    cluster.execute("SELECT pg_switch_wal()")
    last = cluster.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    _wait_archived(cluster, last)
    return times


def _wait_archived(cluster: EphemeralCluster, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cluster.execute("SELECT pg_switch_wal()")
        done = cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if done is not None and done[:24] >= name[:24]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"WAL {name} not archived after {timeout}s")
        time.sleep(0.5)


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(argv[1:4])} failed: {result.stderr.strip()[-800:]}")
    return result


def _drill(root: Path, env: dict, kind: str) -> dict:
    argv = [*DRBACKUP, "drill", "run", "--target", "bench", "--kind", kind, "--format", "json"]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    result = _run(argv, env)
    wall = time.monotonic() - started
    load = (load_before, os.getloadavg()[0])
    report = json.loads(result.stdout)
    timings = report["targets"][0]["timings"]
    checks = {}
    for check in report["checks"]:
        if check["name"] not in ("rto", "rpo", "restore", "recovery", "point"):
            checks[check["name"]] = checks.get(check["name"], 0.0) + check["seconds"]
    return {
        "kind": kind,
        "status": report["status"],
        "wall_s": wall,
        "load": load,  # 1-minute load average before and after the drill
        "timings": timings,
        "checks_s": checks,
        "failed": [c["summary"] for c in report["checks"] if c["status"] == "fail"],
    }


def _say(d: dict, number: int, repeat: int) -> None:
    t = d["timings"]
    phases = ""
    if d["kind"] == "physical":
        phases = (
            f" (base backup {t.get('fetch_extract_s', 0):.1f}s, WAL {t.get('recovery_s', 0):.1f}s)"
        )
    print(
        f"{d['kind']} drill {number}/{repeat}: restore {t['restore_s']:.1f}s{phases}, verification "
        f"{t['verification_s']:.1f}s, ratio {_ratio(d):.2f}, load {d['load'][0]:.1f}-"
        f"{d['load'][1]:.1f} ({d['status']})",
        flush=True,
    )


def _ratio(d: dict) -> float:
    return d["timings"]["verification_s"] / d["timings"]["restore_s"]


def _report(drills: list[dict], size: int, backups: dict, machine: str, json_path) -> None:
    print(
        f"\n{machine}; pgbench database {fmt_size(size)}; base backup {backups['physical']:.1f}s, "
        f"logical backup {backups['logical']:.1f}s"
    )
    best = {
        kind: min(
            (d for d in drills if d["kind"] == kind),
            key=lambda d: d["timings"]["restore_s"] + d["timings"]["verification_s"],
        )
        for kind in ("logical", "physical")
    }
    lg, ph = best["logical"]["timings"], best["physical"]["timings"]
    rows = [
        ["restore (wall)", f"{lg['restore_s']:.1f}", f"{ph['restore_s']:.1f}"],
        ["  fetch/decrypt (overlapped)", f"{lg['fetch_decrypt_s']:.1f}", "-"],
        ["  data (pg_restore)", f"{lg['data_s']:.1f}", "-"],
        ["  indexes and constraints", f"{lg['post_data_s']:.1f}", "-"],
        ["  base backup fetch/decrypt/extract", "-", f"{ph.get('fetch_extract_s', 0):.1f}"],
        ["  WAL fetch and replay", "-", f"{ph.get('recovery_s', 0):.1f}"],
        ["verification (wall)", f"{lg['verification_s']:.1f}", f"{ph['verification_s']:.1f}"],
    ]
    names = sorted(set(best["logical"]["checks_s"]) | set(best["physical"]["checks_s"]))
    rows += [
        [f"  {n}"] + [f"{best[k]['checks_s'].get(n, 0):.1f}" for k in ("logical", "physical")]
        for n in names
    ]
    rows.append(
        ["restore + verification"]
        + [f"{lg['restore_s'] + lg['verification_s']:.1f}"]
        + [f"{ph['restore_s'] + ph['verification_s']:.1f}"]
    )
    print(render_table(["seconds (best run)", "logical", "physical"], rows))
    print()
    for kind in ("logical", "physical"):
        ratio = _ratio(best[kind])
        every = [_ratio(d) for d in drills if d["kind"] == kind]
        verdict = "PASS" if max(every) <= TARGET_RATIO else "MISS"
        print(
            f"{kind}: verification / restore = {ratio:.2f} in the best run, every run "
            f"{', '.join(f'{r:.2f}' for r in every)} (spread {max(every) / min(every) - 1:.0%}; "
            f"target <= {TARGET_RATIO} in every run): {verdict}"
        )
        if best[kind]["failed"]:
            print(f"{kind}: failed checks: " + "; ".join(best[kind]["failed"]))
    if json_path:
        json_path.write_text(json.dumps({"machine": machine, "size": size, "drills": drills}))
