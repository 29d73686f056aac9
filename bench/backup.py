"""Backup and restore of a generated PostgreSQL database: drbackup against the tools it wraps.

Measures, each command as its own child process (wall time, CPU of its process tree, CPU of
the PostgreSQL server meanwhile, peak RSS; see common.py):

    backup   pg_dump -Fc -Z0 > /dev/null   (the floor: one backend running COPY)
             pg_dump -Fc > file            (pg_dump's default compression)
             drbackup backup postgres      fingerprint --fingerprint (default full) and off,
                                           at --zstd-level (default 1) and --compare-level (3)
    restore  pg_restore -j2 -d <new db> file, and pg_restore -d <new db> file (-j1)
             drbackup restore postgres --into <new db> --create   (streamed, one job)
             the same with --jobs 2                               (spooled to disk)

then prints a table of figures and PASS/MISS against the targets (backup <= 1.3x the floor
and faster than pg_dump -Fc; restore --jobs 2 <= 1.15x pg_restore -j2, and the streamed
restore held to the same ratio against pg_restore -j1; RSS < 150 MiB).  Every measurement
runs ``--repeat`` times (default 2), in rounds (every other one backwards).  The floor runs
next to every drbackup backup, and pg_restore -jN next to the restore with N jobs, so that
each run of ours has a baseline run beside it.  A ratio is given as fastest over fastest and
as the median of the runs' ratios to the baseline runs beside them; it passes only if both
do.  The spread between runs says how noisy the machine was.  bench/README.md explains the
columns.

Usage (as root or not; the server runs as user postgres under root)::

    .venv/bin/python bench/backup.py [--size-gb 1.0] [--reuse] [--skip-restore]
        [--fingerprint off|counts|full] [--repeat 2] [--zstd-level 1] [--compare-level 3] [--zstd-threads 0]
        [--nice N] [--json FILE] [--strict] [--only all|backup|restore|restore-j2]

``--only restore`` measures only the four restores (``restore-j2``: only pg_restore -j2
and the spooled drbackup restore); the dump file and the one backup they need are made
first, not measured.  ``--reuse`` keeps the generated cluster in /var/tmp/drbackup-bench/pg
for the next run (generating 1 GiB takes about two minutes; bench/drill.py uses it too, and
a lock file makes concurrent benches wait).  The repository, dump file and spool directory are under
/var/tmp/drbackup-bench/run and are removed at the end.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Measurement,
    Result,
    best_of,
    byte_compile_drbackup,
    fmt_mib,
    fmt_size,
    generate_database,
    machine_summary,
    render_table,
    run_measured,
)
from drbackup.sources.postgres.cluster import EphemeralCluster, read_postmaster_pid  # noqa: E402

BENCH_DIR = Path("/var/tmp/drbackup-bench")
DBNAME = "bench"
PASSPHRASE = "bench passphrase, not a secret"
# Same server settings for every measurement: a modest production-like setup, checkpoints
# spaced out so that a restore is not measured against a checkpoint storm.
SERVER_SETTINGS = {
    "shared_buffers": "512MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    # A restored database's new tables would be vacuumed by autovacuum at a random point of
    # that measurement or the next: up to 5 s of server CPU apart between identical runs.
    "autovacuum": "off",
}
TARGETS = {"floor": 1.3, "restore": 1.15, "rss": 150 * (1 << 20)}
CORES = os.cpu_count() or 1
DRBACKUP = [str(Path(sys.executable).parent / "drbackup")]  # the console script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=1.0, help="database size in GiB (1.0)")
    p.add_argument("--reuse", action="store_true", help=f"keep the cluster in {BENCH_DIR}/pg")
    p.add_argument("--skip-restore", action="store_true", help="measure backups only")
    p.add_argument("--fingerprint", choices=("off", "counts", "full"), default="full")
    p.add_argument("--repeat", type=int, default=2, help="runs per measurement (2)")
    p.add_argument(
        "--zstd-level", type=int, default=1, help="repository.compression.level (1, the default)"
    )
    p.add_argument("--compare-level", type=int, default=3, help="a second zstd level measured (3)")
    p.add_argument("--zstd-threads", type=int, default=0, help="0: one per core; 1: single")
    p.add_argument(
        "--nice", type=int, default=0, help="niceness increment for the bench and its server"
    )
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument(
        "--only",
        choices=("all", "backup", "restore", "restore-j2"),
        default="all",
        help="backup: the floor and drbackup backups only; restore, restore-j2: only the "
        "restores (their dump file and backup are made unmeasured)",
    )
    return p.parse_args(argv)


# --- the database --------------------------------------------------------------------------


@dataclass
class Bench:
    """Where things are for one run."""

    args: argparse.Namespace
    cluster: EphemeralCluster
    run_dir: Path
    bin_dir: Path

    def dsn(self, dbname: str = DBNAME) -> str:
        return self.cluster.dsn(dbname)

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


_HELD_LOCKS: list = []  # open lock files, released when this process exits


def lock_shared_cluster(base: Path) -> None:
    """Wait until no other bench process uses the cluster in ``base``, then hold it until
    this process exits (bench/drill.py shares the ``--reuse`` cluster)."""
    lock = open(base.with_suffix(".lock"), "a")  # noqa: SIM115 - held for the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another bench using {base} ...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    _HELD_LOCKS.append(lock)


def open_cluster(args) -> EphemeralCluster:
    """Start the bench cluster (generating the database if needed) with SERVER_SETTINGS.

    With ``args.reuse`` the cluster is /var/tmp/drbackup-bench/pg, kept for the next run and
    locked for this process; else a temporary one under /var/tmp/drbackup-bench.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(BENCH_DIR, 0o755)
    base = BENCH_DIR / "pg" if args.reuse else Path(tempfile.mkdtemp(prefix="pg-", dir=BENCH_DIR))
    if args.reuse:
        lock_shared_cluster(base)
    marker = base / "generated.json"
    wanted = {"size_gb": args.size_gb}
    if marker.exists() and json.loads(marker.read_text()).get("size_gb") == args.size_gb:
        return EphemeralCluster(base, settings=SERVER_SETTINGS).start()
    if base.exists() and (base / "data").exists():
        EphemeralCluster(base).destroy()  # generated for another size
    print(f"generating a {args.size_gb:g} GiB database in {base} ...", flush=True)
    started = time.monotonic()
    gen = EphemeralCluster(base, settings=SERVER_SETTINGS, fast=True).start()
    try:
        gen.create_database(DBNAME)
        with gen.connect(DBNAME) as conn:
            counts = generate_database(conn, args.size_gb)
    except BaseException:
        gen.destroy()  # never leave a half-generated database to be reused
        raise
    gen.stop()  # clean shutdown: everything is on disk before durability is turned on
    marker.write_text(json.dumps(wanted | {"rows": counts}))
    print(f"generated in {time.monotonic() - started:.0f}s", flush=True)
    return EphemeralCluster(base, settings=SERVER_SETTINGS).start()


def database_size(bench: Bench) -> int:
    return bench.cluster.execute("SELECT pg_database_size(%s)", params=(DBNAME,))[0][0]


def fresh_database(bench: Bench, name: str, *, create: bool) -> str:
    """Drop ``name`` (and create it empty from template0 if ``create``); return its dsn."""
    bench.cluster.drop_database(name)
    if create:
        bench.cluster.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return bench.dsn(name)


# --- drbackup ------------------------------------------------------------------------------


def write_config(bench: Bench, zstd_level: int) -> Path:
    """A config with one target per fingerprint level (``fp_full`` ...), all dumping the
    bench database into one repository; targets are suffixed ``_z<level>``."""
    targets = "".join(
        f"""  fp_{level}_z{zstd_level}:
    dsn: {bench.dsn()}
    databases: [{DBNAME}]
    fingerprint: "{level}"
"""
        for level in ("off", "counts", "full")
    )
    text = f"""repository:
  url: {bench.run_dir / "repo"}
  compression: {{level: {zstd_level}, threads: {bench.args.zstd_threads}}}
catalog: sqlite:///{bench.run_dir / "catalog.db"}
postgres:
{targets}"""
    path = bench.run_dir / f"drbackup-z{zstd_level}.yaml"
    path.write_text(text)
    return path


def drbackup_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DRBACKUP_"))}
    return env | {"DRBACKUP_CONFIG": str(config), "DRBACKUP_PASSPHRASE": PASSPHRASE}


def measure_drbackup_backup(bench: Bench, zstd_level: int, fingerprint: str) -> Measurement:
    env = drbackup_env(write_config(bench, zstd_level))
    target = f"fp_{fingerprint}_z{zstd_level}"
    m = run_child(bench, [*DRBACKUP, "backup", "postgres", target, "--json"], env=env)
    return m.check(f"drbackup backup {target}")


def measure_drbackup_restore(bench: Bench, jobs: int) -> Measurement:
    """Restore the latest backup of the main target into a new database (dropped after)."""
    args = bench.args
    env = drbackup_env(write_config(bench, args.zstd_level))
    target = f"fp_{args.fingerprint}_z{args.zstd_level}"
    into = fresh_database(bench, "restored_drbackup", create=False)
    argv = [*DRBACKUP, "restore", "postgres", target, "--into", into, "--create"]
    argv += ["--jobs", str(jobs), "--spool-dir", str(bench.run_dir), "--json"]
    m = run_child(bench, argv, env=env).check(f"drbackup restore --jobs {jobs}")
    bench.cluster.drop_database("restored_drbackup")
    return m


# --- pg_dump / pg_restore ------------------------------------------------------------------


def measure_pg_dump(bench: Bench, dest: Path | None) -> Measurement:
    """``pg_dump -Fc`` (default compression) into ``dest``, or ``-Fc -Z0`` to /dev/null."""
    argv = [bench.tool("pg_dump"), "-Fc", f"--dbname={bench.dsn()}"]
    if dest is None:
        return run_child(bench, [*argv, "-Z0"], stdout=subprocess.DEVNULL).check("pg_dump -Z0")
    with open(dest, "wb") as out:
        return run_child(bench, argv, stdout=out).check("pg_dump -Fc")


def measure_pg_restore(bench: Bench, archive: Path, jobs: int) -> Measurement:
    into = fresh_database(bench, "restored_pg", create=True)
    argv = [bench.tool("pg_restore"), f"--jobs={jobs}", f"--dbname={into}", str(archive)]
    m = run_child(bench, argv).check(f"pg_restore -j{jobs}")
    bench.cluster.drop_database("restored_pg")
    return m


def run_child(bench: Bench, argv, *, env=None, stdout=subprocess.PIPE) -> Measurement:
    """Measure ``argv`` with the CPU the bench server used meanwhile."""
    bench_env = env or {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    pid = read_postmaster_pid(bench.cluster.data_dir)
    return run_measured(argv, env=bench_env, stdout=stdout, postmaster_pid=pid)


# --- the run -------------------------------------------------------------------------------

LABELS = {
    "floor": "pg_dump -Fc -Z0 > /dev/null (floor)",
    "pg_dump_fc": "pg_dump -Fc > file",
    "backup_full": "drbackup backup (fingerprint full)",
    "backup_counts": "drbackup backup (fingerprint counts)",
    "backup_off": "drbackup backup (fingerprint off)",
    "pg_restore_j2": "pg_restore -j2 file",
    "pg_restore_j1": "pg_restore file (-j1)",
    "restore_j1": "drbackup restore (streamed)",
    "restore_j2": "drbackup restore --jobs 2 (spooled)",
}
LABELS.update(
    {
        f"backup_{fp}_z{level}": f"drbackup backup (fingerprint {fp}, zstd {level})"
        for fp in ("full", "counts", "off")
        for level in range(1, 23)
    }
)


RESTORE_ONLY = {  # in round order: the spooled restore beside pg_restore -j2, its baseline
    "restore": ("pg_restore_j1", "restore_j1", "pg_restore_j2", "restore_j2"),
    "restore-j2": ("pg_restore_j2", "restore_j2"),
}


def measurement_plan(bench: Bench, archive: Path) -> list[tuple[str, Callable[[], Measurement]]]:
    """(name, run once) of every measurement, in the order of a round."""
    args = bench.args
    if args.only not in ("all", "backup"):
        print("setup (not measured): pg_dump -Fc > file, one drbackup backup", flush=True)
        measure_pg_dump(bench, archive)
        measure_drbackup_backup(bench, args.zstd_level, args.fingerprint)
        plan = {
            "pg_restore_j2": lambda: measure_pg_restore(bench, archive, 2),
            "pg_restore_j1": lambda: measure_pg_restore(bench, archive, 1),
            "restore_j1": lambda: measure_drbackup_restore(bench, 1),
            "restore_j2": lambda: measure_drbackup_restore(bench, 2),
        }
        return [(name, plan[name]) for name in RESTORE_ONLY[args.only]]
    floor = ("floor", lambda: measure_pg_dump(bench, None))
    plan = [("pg_dump_fc", lambda: measure_pg_dump(bench, archive))] if args.only == "all" else []
    levels = dict.fromkeys([args.zstd_level, args.compare_level])
    for level in levels:
        for fp in dict.fromkeys([args.fingerprint, "off"]):
            name = f"backup_{fp}" + ("" if level == args.zstd_level else f"_z{level}")
            # A floor run beside every backup: the VM's speed drifts within a minute.
            plan += [floor, (name, lambda fp=fp, lv=level: measure_drbackup_backup(bench, lv, fp))]
    if (
        not args.skip_restore and args.only == "all"
    ):  # after the backups: restores read the latest one
        plan += [
            ("pg_restore_j1", lambda: measure_pg_restore(bench, archive, 1)),
            ("restore_j1", lambda: measure_drbackup_restore(bench, 1)),
            ("pg_restore_j2", lambda: measure_pg_restore(bench, archive, 2)),
            ("restore_j2", lambda: measure_drbackup_restore(bench, 2)),
        ]
    return plan  # fmt: skip


def measure_all(bench: Bench) -> tuple[dict[str, Result], list[str]]:
    """Every measurement, ``repeat`` rounds; returns results by short name, and the names
    in the order the runs were made (see :func:`paired`)."""
    subprocess.run(
        [*DRBACKUP, "init"],
        env=drbackup_env(write_config(bench, bench.args.zstd_level)),
        check=True,
        capture_output=True,
    )
    archive = bench.run_dir / "bench.dump"
    plan = measurement_plan(bench, archive)
    results = {name: Result(name) for name, _ in plan}
    order: list[str] = []
    for round_no in range(bench.args.repeat):  # rounds: a busy spell hits every measurement
        print(f"round {round_no + 1}/{bench.args.repeat}", flush=True)
        # Every other round runs backwards: neither side of a ratio always goes first.
        for name, run_once in plan if round_no % 2 == 0 else plan[::-1]:
            settle(bench)
            results[name].runs.extend(best_of(name, 1, run_once).runs)
            order.append(name)
    if "pg_dump_fc" in results:
        results["pg_dump_fc"].extra["output"] = archive.stat().st_size
    for name in (n for n in results if n.startswith("backup_")):
        summary = json.loads(results[name].best.stdout)
        results[name].extra |= {"output": summary["stored_size"], "dump": summary["size"]}
    for name in (n for n in results if n.startswith("restore_")):
        summary = json.loads(results[name].best.stdout)
        spooled = name == "restore_j2"  # the spool is written before pg_restore starts
        fetch = summary["fetch_decrypt_s"]
        results[name].extra |= {
            "spool_s": fetch if spooled else 0.0,
            "pg_restore_s": summary["elapsed_s"] - (fetch if spooled else 0.0),
        }
    return results, order


def settle(bench: Bench) -> None:
    """Start each measurement from a checkpointed server and flushed dirty pages: otherwise the
    previous one (a 1 GiB restore) would be flushed during it, on its CPU and disks."""
    bench.cluster.execute("CHECKPOINT")
    os.sync()


def figures_table(results: dict[str, Result]) -> str:
    rows = []
    for name, r in results.items():
        b = r.best
        walls = ", ".join(f"{m.wall_s:.1f}" for m in r.runs)
        out = fmt_size(r.extra["output"]) if "output" in r.extra else ""
        rows.append(
            [LABELS[name], f"{b.wall_s:.1f}", walls, f"{r.spread:.0%}", f"{b.cpu_s:.1f}",
             f"{b.server_cpu_s:.1f}", f"{(b.cpu_s + b.server_cpu_s) / CORES:.1f}",
             fmt_mib(b.max_rss), fmt_mib(b.tree_rss), out]
        )  # fmt: skip
    headers = ["measurement", "best s", "runs s", "spread", "CPU s", "server CPU s",
               "all CPU / cores", "RSS max", "RSS tree", "out"]  # fmt: skip
    return render_table(headers, rows)


def paired(results: dict[str, Result], order: list[str], ours: str, base: str) -> list[float]:
    """Each run of ``ours`` over the mean of the ``base`` runs right beside it in ``order``
    (the nearest ones if none is beside it): the machine's speed drifts within minutes (the
    floor took 6.1-8.2 s in one day), less from one run to the next."""
    runs = {name: iter(r.runs) for name, r in results.items()}
    timeline = [(name, next(runs[name])) for name in order]
    bases = [i for i, (name, _) in enumerate(timeline) if name == base]
    ratios = []
    for i, (name, m) in enumerate(timeline):
        if name != ours:
            continue
        beside = [j for j in (i - 1, i + 1) if j in bases]
        if not beside:
            gap = min(abs(j - i) for j in bases)
            beside = [j for j in bases if abs(j - i) == gap]
        ratios.append(m.wall_s / statistics.fmean(timeline[j][1].wall_s for j in beside))
    return ratios


def verdicts(results: dict[str, Result], order: list[str], fingerprint: str) -> list[list[str]]:
    """Rows of (target, value, goal, PASS/MISS).  A time ratio is given twice: fastest run
    over fastest run, and the median of each run's ratio to the baseline beside it (with
    their range; :func:`paired`); it passes only if both are within the goal."""
    wall = {name: r.best.wall_s for name, r in results.items()}
    rows = []

    def add(what: str, value: float, goal: str, ok: bool, fmt: str = "{:.2f}") -> None:
        rows.append([what, fmt.format(value), goal, "PASS" if ok else "MISS"])

    def ratio(ours: str, base: str, limit: float, what: str, *, strict: bool = False) -> None:
        best = wall[ours] / wall[base]
        rounds = sorted(paired(results, order, ours, base))
        median = statistics.median(rounds)
        shown = f"{best:.2f}; beside {median:.2f} ({rounds[0]:.2f}-{rounds[-1]:.2f})"
        ok = all((v < limit) if strict else (v <= limit) for v in (best, median))
        rows.append([what, shown, f"{'<' if strict else '<='} {limit}", "PASS" if ok else "MISS"])

    for name in (n for n in results if n.startswith("backup_")):
        ratio(name, "floor", TARGETS["floor"], f"{LABELS[name]} / floor")
    if "pg_dump_fc" in wall:
        name = f"backup_{fingerprint}"
        ratio(name, "pg_dump_fc", 1.0, f"{LABELS[name]} / pg_dump -Fc", strict=True)
    # each restore against pg_restore with the same parallelism: the target is the
    # --jobs 2 pair; the streamed (-j1) restore is held to the same ratio against -j1
    for name, base, shown in (
        ("restore_j1", "pg_restore_j1", "pg_restore -j1"),
        ("restore_j2", "pg_restore_j2", "pg_restore -j2"),
    ):
        if name in wall and base in wall:
            ratio(name, base, TARGETS["restore"], f"{LABELS[name]} / {shown}")
    for name in (n for n in results if n.startswith(("backup_", "restore_"))):
        rss = results[name].best.tree_rss
        ok = rss < TARGETS["rss"]
        add(f"RSS of {LABELS[name]}", rss / (1 << 20), "< 150 MiB", ok, "{:.0f} MiB")
    if "pg_dump_fc" not in results:  # --only restore
        return rows
    gzip = results["backup_off"].extra["dump"] / results["pg_dump_fc"].extra["output"]
    for name in (n for n in results if n.startswith("backup_")):
        ours = results[name].extra["dump"] / results[name].extra["output"]
        rows.append([f"compression of {LABELS[name]}", f"{ours:.2f}", "data: 2-3:1", "info"])
    rows.append(["compression of pg_dump -Fc (gzip)", f"{gzip:.2f}", "", "info"])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    byte_compile_drbackup()
    if args.nice:
        os.nice(args.nice)  # inherited by every child, the postgresql server included
    started = datetime.now(UTC)
    machine = machine_summary()
    cluster = open_cluster(args)
    run_dir = BENCH_DIR / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    bench = Bench(args, cluster, run_dir, cluster.bin_dir)
    try:
        size = database_size(bench)
        print(f"database {DBNAME}: {fmt_size(size)}; {machine}", flush=True)
        results, order = measure_all(bench)
    finally:
        cluster.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        if not args.reuse:
            shutil.rmtree(cluster.base_dir, ignore_errors=True)
    rows = report(args, results, order, size, machine, started)
    return 1 if args.strict and any(row[-1] == "MISS" for row in rows) else 0


def report(
    args, results: dict[str, Result], order: list[str], size: int, machine: str, started
) -> list[list[str]]:
    """Print the figures, the verdicts and the noise; write --json if asked; return the
    verdict rows."""
    dump = results["backup_off"].extra["dump"] if "backup_off" in results else None
    print(f"\n{started:%Y-%m-%d %H:%M} UTC; {machine}")
    print(
        f"database {fmt_size(size)}, dump (-Z0) {fmt_size(dump) if dump else '-'}; zstd level {args.zstd_level}, "
        f"threads {args.zstd_threads}; best of {args.repeat}; nice {args.nice}\n"
        "CPU = the command's process tree; server CPU = the postgresql backends meanwhile;\n"
        "all CPU / cores = the shortest wall time that CPU allows (the bound on a quiet machine)\n"
        "RSS max = largest single process (ru_maxrss); RSS tree = summed process tree (sampled)\n"
    )
    print(figures_table(results) + "\n")
    rows = verdicts(results, order, args.fingerprint)
    print(render_table(["target", "value", "goal", "result"], rows))
    worst = max(results.values(), key=lambda r: r.spread)
    if "backup_off" in results:
        fp_cost = (
            results[f"backup_{args.fingerprint}"].best.wall_s - results["backup_off"].best.wall_s
        )
        print(f"\nfingerprint {args.fingerprint} adds {fp_cost:.1f}s to the backup")
    for name in (n for n in results if n.startswith("restore_")):
        extra = results[name].extra
        rest = results[name].best.wall_s - extra["pg_restore_s"] - extra["spool_s"]
        print(
            f"{LABELS[name]}: spool {extra['spool_s']:.1f}s, pg_restore {extra['pg_restore_s']:.1f}s, "
            f"the rest (start-up, imports, key, manifest, target) {rest:.1f}s"
        )
        for m in results[name].runs:  # every run: the breakdown of the best can be a fluke
            summary = json.loads(m.stdout)
            spool = summary["fetch_decrypt_s"] if name == "restore_j2" else 0.0
            print(
                f"  run: wall {m.wall_s:.2f}s, CPU {m.cpu_s:.2f}s, spool {spool:.2f}s, "
                f"pg_restore {summary['elapsed_s'] - spool:.2f}s, "
                f"rest {m.wall_s - summary['elapsed_s']:.2f}s"
            )
    print(
        f"noise: largest spread {worst.spread:.0%} ({LABELS[worst.name]}); load now {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        data = to_json(args, results, size, machine, started) | {"order": order}
        args.json.write_text(json.dumps(data, indent=2))
    return rows


def to_json(args, results: dict[str, Result], size: int, machine: str, started) -> dict:
    return {
        "date": started.isoformat(),
        "machine": machine,
        "database_size": size,
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": {
            n: {"walls": [m.wall_s for m in r.runs], "cpu_s": r.best.cpu_s,
                "server_cpu_s": r.best.server_cpu_s,
                "max_rss": r.best.max_rss, "tree_rss": r.best.tree_rss, **r.extra}
            for n, r in results.items()
        },
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
