"""Physical backup and restore to the end of the WAL: drbackup against pgBackRest, one run.

On the generated database of bench/backup.py (the same cluster, --reuse), with WAL archived
by both tools at once (pgBackRest through archive_command with archive-async; drbackup by
streaming: ``drbackup wal stream`` runs beside, as the daemon would), both with zstd at
``--zstd-level`` (default 1, drbackup's default), encryption (pgBackRest aes-256-cbc,
drbackup AES-256-GCM) and the same process count (pgBackRest process-max = cores; drbackup's
zstd threads = cores).  Measured, each command as its own child (common.py):

    backup    pgbackrest --type=full backup   (start-fast; waits for its WAL, as ours does)
              drbackup backup postgres --physical
              pg_basebackup -Ft -X none -c fast, client zstd at the same level and thread
              count, into a directory (no encryption: the floor of a streamed base backup;
              -X none waits for the backup's WAL to be archived, as the others do)
    restore   pgbackrest restore --type=default, then the server started until it promotes
              drbackup restore postgres --into-dir DIR --latest --start
              (both replay the same WAL: a pgbench load written after the last backups)
    WAL       pgbench -i (a bulk load) and pgbench at full speed: how far each archive falls
              behind the server's current segment (sampled every 0.25 s), WAL MB/s

then the repository sizes (base backups and WAL apart), and PASS/MISS against the targets:
backup and restore <= 1.2x pgBackRest (fastest over fastest, and the median of each run's
ratio to the pgBackRest run beside it), RSS < 150 MiB (the tool's processes: the restored
server is not counted), the streamed archive never more than 2 segments behind under
pgbench at full speed.  Runs are interleaved in rounds, every other one backwards.

Usage (root: the servers and pgBackRest run as user postgres; pgBackRest is the Debian
package ``pgbackrest``, used only here)::

    .venv/bin/python bench/physical.py [--size-gb 1.0] [--reuse] [--repeat 3]
        [--zstd-level 1] [--pgbench-seconds 60] [--json FILE] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backup import BENCH_DIR, SERVER_SETTINGS, open_cluster, paired  # noqa: E402
from bench.common import (  # noqa: E402
    Measurement,
    Result,
    byte_compile_drbackup,
    fmt_mib,
    fmt_size,
    machine_summary,
    render_table,
    run_measured,
)
from bench.physical_tools import (  # noqa: E402
    Tools,
    WalSampler,
    stop_server,
)
from drbackup.sources.postgres.cluster import EphemeralCluster, read_postmaster_pid  # noqa: E402

TARGETS = {"backup": 1.2, "restore": 1.2, "rss": 150 * (1 << 20), "lag_segments": 2}
CORES = os.cpu_count() or 1
EXCLUDE = frozenset({"postgres"})  # a restore's own server is not the tool's memory
LABELS = {
    "pgbr_backup": "pgbackrest backup --type=full",
    "drb_backup": "drbackup backup postgres --physical",
    "pgbb_backup": "pg_basebackup -Ft, client zstd (no encryption)",
    "pgbr_restore": "pgbackrest restore + recovery to the end of WAL",
    "drb_restore": "drbackup restore --into-dir --latest --start",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=1.0, help="database size in GiB (1.0)")
    p.add_argument("--reuse", action="store_true", help=f"keep the cluster in {BENCH_DIR}/pg")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (3)")
    p.add_argument("--zstd-level", type=int, default=1, help="both tools' zstd level (1)")
    p.add_argument("--pgbench-seconds", type=int, default=60, help="full-speed pgbench (60)")
    p.add_argument("--pgbench-scale", type=int, default=20, help="pgbench -i -s (20)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--pgbackrest-recover", nargs=4, metavar=("CONF", "DIR", "PORT", "SOCKET"),
                   help=argparse.SUPPRESS)  # fmt: skip
    return p.parse_args(argv)


@dataclass
class Run:
    args: argparse.Namespace
    cluster: EphemeralCluster
    tools: Tools

    def child(self, argv, *, env=None) -> Measurement:
        pid = read_postmaster_pid(self.cluster.data_dir)
        return run_measured(argv, env=env, postmaster_pid=pid, exclude=EXCLUDE)


# --- measurements ----------------------------------------------------------------------------


def measure_pgbr_backup(run: Run) -> Measurement:
    return run.child(run.tools.pgbackrest("--type=full", "backup")).check("pgbackrest backup")


def measure_drb_backup(run: Run) -> Measurement:
    argv = run.tools.drbackup("backup", "postgres", "bench", "--physical", "--json")
    return run.child(argv, env=run.tools.drbackup_env()).check("drbackup backup --physical")


def measure_pgbb_backup(run: Run) -> Measurement:
    into = run.tools.run_dir / "pg_basebackup"
    shutil.rmtree(into, ignore_errors=True)
    try:
        return run.child(run.tools.pg_basebackup(into)).check("pg_basebackup")
    finally:
        shutil.rmtree(into, ignore_errors=True)


def measure_pgbr_restore(run: Run) -> Measurement:
    into, port, socket = run.tools.restore_dir("pgbr")
    argv = [sys.executable, __file__, "--pgbackrest-recover", str(run.tools.pgbr_conf),
            str(into), str(port), str(socket)]  # fmt: skip
    try:
        return run.child(argv).check("pgbackrest restore and recovery")
    finally:
        stop_server(into)
        shutil.rmtree(into.parent, ignore_errors=True)


def measure_drb_restore(run: Run) -> Measurement:
    into, _port, _socket = run.tools.restore_dir("drb")
    argv = run.tools.drbackup("restore", "postgres", "bench", "--into-dir", str(into),
                              "--latest", "--start", "--json")  # fmt: skip
    try:
        m = run.child(argv, env=run.tools.drbackup_env()).check("drbackup restore --start")
        outcome = json.loads(m.stdout)
        assert outcome["outcome"]["reached"], outcome
        shutil.rmtree(Path(outcome["server"]["log"]).parent, ignore_errors=True)
        return m
    finally:
        stop_server(into)
        shutil.rmtree(into.parent, ignore_errors=True)


def rounds(run: Run, plan, results: dict[str, Result], order: list[str]) -> None:
    for number in range(run.args.repeat):
        print(f"round {number + 1}/{run.args.repeat}", flush=True)
        for name, once in plan if number % 2 == 0 else plan[::-1]:
            run.cluster.execute("CHECKPOINT")
            os.sync()
            m = once(run)
            results.setdefault(name, Result(name)).runs.append(m)
            order.append(name)
            print(f"  {LABELS[name]}: {m.wall_s:.2f}s, tool RSS {fmt_mib(m.tool_rss)}", flush=True)


# --- WAL throughput --------------------------------------------------------------------------


def wal_load(run: Run) -> dict:
    """pgbench -i (bulk) then pgbench at full speed, each tool's lag sampled meanwhile."""
    tools, cluster = run.tools, run.cluster
    cluster.drop_database("pgbench")
    cluster.create_database("pgbench")
    pgbench = [str(cluster.bin_dir / "pgbench")]
    phases = {}
    init = [*pgbench, "-i", "-s", str(run.args.pgbench_scale), "-q", cluster.dsn("pgbench")]
    full = [*pgbench, "-c", "8", "-j", "2", "-n", "-T", str(run.args.pgbench_seconds),
            cluster.dsn("pgbench")]  # fmt: skip
    for name, argv in (("bulk load (pgbench -i)", init), ("pgbench full speed", full)):
        with WalSampler(cluster, tools) as sampler:
            subprocess.run(argv, check=True, capture_output=True)
        phases[name] = sampler.summary()
        print(f"  {name}: {phases[name]}", flush=True)
    tools.wait_archived(cluster)  # both archives hold every segment written
    return phases


# --- the helper child: pgBackRest's restore and recovery, as one command ----------------------


def pgbackrest_recover(conf: str, into: str, port: str, socket: str) -> int:
    """Restore the latest backup into ``into`` and start a server on it until it promotes
    (what ``drbackup restore --start`` does): run as the measured child."""
    started = time.perf_counter()
    Tools.run_as_server(
        ["pgbackrest", f"--config={conf}", "--stanza=bench", f"--pg1-path={into}",
         "--type=default", "restore"]
    )  # fmt: skip
    restored = time.perf_counter()
    Tools.start_recovering_server(Path(into), int(port), Path(socket), conf)
    print(
        json.dumps({"restore_s": restored - started, "recovery_s": time.perf_counter() - restored})
    )
    return 0


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pgbackrest_recover:
        return pgbackrest_recover(*args.pgbackrest_recover)
    if shutil.which("pgbackrest") is None:
        sys.exit("pgbackrest is not installed (apt-get install pgbackrest)")
    byte_compile_drbackup()
    started, machine = datetime.now(UTC), machine_summary()
    cluster = open_cluster(args)
    run_dir = BENCH_DIR / "physical"
    shutil.rmtree(run_dir, ignore_errors=True)
    tools = Tools(run_dir, cluster, args.zstd_level, CORES)
    cluster.stop()
    cluster = EphemeralCluster(cluster.base_dir, settings=SERVER_SETTINGS | tools.server_settings())
    cluster.start()
    tools.cluster = cluster
    run = Run(args, cluster, tools)
    results: dict[str, Result] = {}
    order: list[str] = []
    try:
        tools.setup()
        size = int(cluster.execute("SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0])
        print(f"cluster {fmt_size(size)}; {machine}", flush=True)
        backups = [
            ("pgbr_backup", measure_pgbr_backup),
            ("drb_backup", measure_drb_backup),
            ("pgbb_backup", measure_pgbb_backup),
        ]
        rounds(run, backups, results, order)
        print("WAL: pgbench", flush=True)
        wal = wal_load(run)
        restores = [("pgbr_restore", measure_pgbr_restore), ("drb_restore", measure_drb_restore)]
        rounds(run, restores, results, order)
        repo = tools.repository_sizes()
    finally:
        tools.teardown()
        cluster.stop()
        cluster = EphemeralCluster(cluster.base_dir, settings=SERVER_SETTINGS)  # as it was
        if not args.reuse:
            shutil.rmtree(cluster.base_dir, ignore_errors=True)
    rows = report(args, results, order, wal, repo, size, machine, started)
    return 1 if args.strict and any(row[-1] == "MISS" for row in rows) else 0


def report(args, results, order, wal, repo, size, machine, started) -> list[list[str]]:
    print(f"\n{started:%Y-%m-%d %H:%M} UTC; {machine}")
    print(f"cluster {fmt_size(size)}; zstd level {args.zstd_level}; {CORES} processes each; "
          f"{args.repeat} rounds\n")  # fmt: skip
    rows = []
    for name, r in results.items():
        b = r.best
        rows.append([LABELS[name], f"{b.wall_s:.1f}", ", ".join(f"{m.wall_s:.1f}" for m in r.runs),
                     f"{r.spread:.0%}", f"{b.cpu_s:.1f}", f"{b.server_cpu_s:.1f}",
                     fmt_mib(b.tool_max_rss), fmt_mib(b.tool_rss)])  # fmt: skip
    headers = ["measurement", "best s", "runs s", "spread", "CPU s", "server CPU s",
               "RSS max", "RSS tool"]  # fmt: skip
    print(render_table(headers, rows) + "\n")
    for name in ("pgbr_restore", "drb_restore"):
        print(f"{LABELS[name]}: " + "; ".join(_phases(name, m) for m in results[name].runs))
    print(f"\nrepository ({args.repeat} base backups each, the WAL of the run): "
          + ", ".join(f"{k} {fmt_size(v)}" for k, v in repo.items()))  # fmt: skip
    print("WAL: " + "; ".join(f"{k}: {v}" for k, v in wal.items()) + "\n")
    verdict = verdicts(results, order, wal)
    headers = ["target", "value: best/best; beside: median (min-max)", "goal", "result"]
    print(render_table(headers, verdict))
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(), "machine": machine, "cluster_size": size,
            "order": order, "wal": wal, "repository": repo,
            "results": {n: {"walls": [m.wall_s for m in r.runs], "cpu_s": r.best.cpu_s,
                            "tool_rss": r.best.tool_rss, "tool_max_rss": r.best.tool_max_rss}
                        for n, r in results.items()},
        }, indent=2))  # fmt: skip
    return verdict


def _phases(name: str, m: Measurement) -> str:
    text = m.stdout.decode().strip()
    doc = json.loads(text if name == "drb_restore" else text.splitlines()[-1])
    if name == "drb_restore":
        phases = doc["phases_s"]
        return (
            f"fetch+extract {phases['fetch_extract_s']:.1f}s, recovery {phases['recovery_s']:.1f}s"
        )
    return f"restore {doc['restore_s']:.1f}s, recovery {doc['recovery_s']:.1f}s"


def verdicts(results, order, wal) -> list[list[str]]:
    rows = []
    for ours, base, what, limit in (
        ("drb_backup", "pgbr_backup", "backup / pgBackRest", TARGETS["backup"]),
        ("drb_restore", "pgbr_restore", "restore to end of WAL / pgBackRest", TARGETS["restore"]),
    ):
        best = results[ours].best.wall_s / results[base].best.wall_s
        beside = sorted(paired(results, order, ours, base))
        median = statistics.median(beside)
        ok = best <= limit and median <= limit
        shown = f"{best:.2f}; beside {median:.2f} ({beside[0]:.2f}-{beside[-1]:.2f})"
        rows.append([what, shown, f"<= {limit}", "PASS" if ok else "MISS"])
    best = results["drb_backup"].best.wall_s / results["pgbb_backup"].best.wall_s
    beside = sorted(paired(results, order, "drb_backup", "pgbb_backup"))
    shown = f"{best:.2f}; beside {statistics.median(beside):.2f} ({beside[0]:.2f}-{beside[-1]:.2f})"
    rows.append(["backup / pg_basebackup (info)", shown, "-", "info"])
    for name in ("drb_backup", "drb_restore"):
        rss = max(m.tool_rss for m in results[name].runs)  # the largest run, not the fastest
        ok = rss < TARGETS["rss"]
        rows.append([f"RSS of {LABELS[name]} (largest run)", fmt_mib(rss), "< 150 MiB",
                     "PASS" if ok else "MISS"])  # fmt: skip
    lag = wal["pgbench full speed"]["drbackup_max_lag_segments"]
    ok = lag <= TARGETS["lag_segments"]
    rows.append(["streamed archive behind, pgbench full speed", f"{lag} segments", "<= 2",
                 "PASS" if ok else "MISS"])  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
