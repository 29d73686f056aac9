"""Bucket snapshots against a plain boto3 copy of the same bucket, on the moto S3 server.

Starts moto on loopback, fills a bucket with objects of mixed sizes whose content
compresses about 2-3:1 (plus a few large ones that take the streaming path), then measures,
each as its own child process (wall time, CPU, peak RSS; see common.py):

    copy      a plain boto3 copy: list, get_object, put_object into another bucket, with the
              same number of threads as the snapshot's workers (no hashing, no encryption)
    snapshot  drbackup snapshot minio (first snapshot: every object read, hashed,
              compressed, encrypted and uploaded as a blob), into a fresh repository per run
    unchanged   the same snapshot a second time on the unchanged bucket
    start+list  a child that imports drbackup's CLI and lists the bucket: the floor of any
                incremental snapshot (it must start and list to see what changed)

in interleaved rounds (the fastest run of each counts), and prints the figures with
PASS/MISS against the targets: snapshot throughput at least 0.8x the copy's; the unchanged
snapshot at most 5% of the first's time, and what it spends beyond start+list at most 5%;
zero bytes uploaded by the unchanged snapshot.  Exits 1 when a target is missed.  moto runs
on the same cores and is the slowest party; both sides pay it alike.  moto renders listings
slowly (about 1 ms per key here, against ~16 ms for a GET and a PUT), so on moto start+list
alone is about 6% of a first snapshot.

Usage::

    .venv/bin/python bench/snapshot.py [--objects 5000] [--mean-kib 32] [--large 2]
        [--large-mib 24] [--workers 8] [--repeat 2]
    .venv/bin/python bench/snapshot.py --history [--history-objects 100000] [--changed 0.01]

``--history`` measures versioned buckets instead: incremental capture after 1% changes
against a full one, and restore to a second against a boto3 copy (bench/history.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Result,
    byte_compile_drbackup,
    fmt_mib,
    fmt_size,
    machine_summary,
    render_table,
    run_measured,
)

PASSPHRASE = "bench passphrase, not a secret"
SOURCE = "photos"
COPY_TARGET = 0.8
SECOND_TARGET = 0.05

COPY_SCRIPT = """
import sys, boto3, botocore.config
from concurrent.futures import ThreadPoolExecutor
endpoint, src, dst, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = botocore.config.Config(max_pool_connections=workers + 2, s3={"addressing_style": "path"})
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1", config=cfg)
s3.create_bucket(Bucket=dst)
def copy(key):
    obj = s3.get_object(Bucket=src, Key=key)
    s3.put_object(Bucket=dst, Key=key, Body=obj["Body"].read(), ContentType=obj["ContentType"],
                  Metadata=obj["Metadata"])
keys = (o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=src)
        for o in page.get("Contents", ()))
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(copy, keys))
"""


FLOOR_SCRIPT = """
import sys
from drbackup.cli.main import load_command
load_command("snapshot")  # the imports a snapshot command pays
from drbackup.sources.buckets.client import BucketClient
client = BucketClient(sys.argv[1], "testing", "testing", secure=False)
print(sum(1 for _ in client.list_objects(sys.argv[2])))
"""


def start_moto(tmp: Path) -> tuple[subprocess.Popen, str]:
    """moto's standalone server on a free loopback port (polled until it answers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = (tmp / "moto.log").open("wb")
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return proc, endpoint
        except urllib.error.HTTPError:
            return proc, endpoint
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not start: {(tmp / 'moto.log').read_text()}")


def client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def text_pool(size: int = 8 << 20) -> bytes:
    """CSV-like rows (ids, md5 hex, dates, amounts, emails): compresses about 2-3:1."""
    rows, total, i = [], 0, 0
    while total < size:
        digest = hashlib.md5(i.to_bytes(8, "big")).hexdigest()
        row = f"{i},{digest},2026-03-{i % 28 + 1:02d},{i * 7919 % 100000 / 100:.2f},u{i % 9973}@x.org\n"
        rows.append(row.encode())
        total += len(row)
        i += 1
    return b"".join(rows)


def fill_bucket(endpoint: str, args) -> tuple[int, int]:
    """Objects of exponentially distributed size around ``mean_kib`` plus ``large`` big ones."""
    s3 = client(endpoint)
    s3.create_bucket(Bucket=SOURCE)
    pool = text_pool()
    rnd = random.Random(42)
    sizes = [max(1, int(rnd.expovariate(1 / (args.mean_kib * 1024)))) for _ in range(args.objects)]
    sizes = [min(s, len(pool) // 2) for s in sizes] + [args.large_mib << 20] * args.large

    def body(i: int, size: int) -> bytes:
        r = random.Random(i)
        noise = r.randbytes(size // 5)
        if size <= len(pool) // 2:
            start = r.randrange(len(pool) - size)
            return noise + pool[start : start + size - len(noise)]
        return noise + (pool * (size // len(pool) + 1))[: size - len(noise)]

    def put(job: tuple[int, int]) -> None:
        i, size = job
        key = f"{'large' if size >= args.large_mib << 20 else 'files'}/{i % 97:02d}/{i:07d}.csv"
        s3.put_object(Bucket=SOURCE, Key=key, Body=body(i, size), ContentType="text/csv")

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(put, enumerate(sizes)))
    return len(sizes), sum(sizes)


def write_config(tmp: Path, endpoint: str, run: int) -> Path:
    (tmp / "key").write_text("testing\n")
    (tmp / "key").chmod(0o600)
    path = tmp / f"drbackup-{run}.yaml"
    path.write_text(
        f"""
repository:
  url: s3://repo/run-{run}
  s3:
    endpoint_url: {endpoint}
    region: us-east-1
    access_key_id_file: {tmp / "key"}
    secret_access_key_file: {tmp / "key"}
catalog: sqlite:///{tmp / f"catalog-{run}.db"}
minio:
  files:
    endpoint: {endpoint}
    access_key_file: {tmp / "key"}
    secret_key_file: {tmp / "key"}
    buckets: [{SOURCE}]
"""
    )
    return path


def drbackup(config: Path, *args: str) -> list[str]:
    script = Path(sys.executable).with_name("drbackup")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "drbackup.cli.main"]
    return [*base, "--config", str(config), *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--mean-kib", type=int, default=32)
    parser.add_argument("--large", type=int, default=2)
    parser.add_argument("--large-mib", type=int, default=24)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fill", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--history", action="store_true", help="versioned buckets instead (bench/history.py)"
    )
    parser.add_argument("--history-objects", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of objects changed")
    args = parser.parse_args()
    if args.history:
        return history_main(args)
    if args.fill:  # child mode: keeps the generated data out of the measuring process
        count, total = fill_bucket(args.fill, args)
        client(args.fill).create_bucket(Bucket="repo")
        print(count, total)
        return 0

    byte_compile_drbackup()
    tmp = Path(tempfile.mkdtemp(prefix="drbackup-bench-snapshot-"))
    moto, endpoint = start_moto(tmp)
    env = {**os.environ, "DRBACKUP_PASSPHRASE": PASSPHRASE, "DRBACKUP_HOME": str(tmp)}
    try:
        print(machine_summary())
        fill = [sys.executable, __file__, "--fill", endpoint, *sys.argv[1:]]
        count, total = map(
            int, subprocess.run(fill, check=True, capture_output=True).stdout.split()
        )
        print(f"source: {count} objects, {fmt_size(total)} (moto at {endpoint})")
        runs = iter(range(1000))

        def copy_once():
            dst = f"copy-{next(runs)}"
            argv = [sys.executable, "-c", COPY_SCRIPT, endpoint, SOURCE, dst, str(args.workers)]
            return run_measured(argv, env=env).check("boto3 copy")

        configs: list[Path] = []

        def snapshot_once():
            run = next(runs)
            config = write_config(tmp, endpoint, run)
            configs.append(config)
            init = drbackup(config, "init", "--scrypt-log-n", "10")
            subprocess.run(init, env=env, check=True, capture_output=True)
            argv = drbackup(config, "snapshot", "minio", "files", "--workers", str(args.workers))
            return run_measured(argv, env=env).check("first snapshot")

        def floor_once():
            host = endpoint.removeprefix("http://")
            argv = [sys.executable, "-c", FLOOR_SCRIPT, host, SOURCE]
            return run_measured(argv, env=env).check("listing floor")

        def again_once():
            argv = drbackup(configs[-1], "snapshot", "minio", "files", "--json")
            return run_measured(argv, env=env).check("second snapshot")

        # Rounds interleave the three so that a busy moment of the machine hits all alike.
        results = [Result(n) for n in ("boto3 copy", "snapshot", "unchanged", "start+list")]
        onces = (copy_once, snapshot_once, again_once, floor_once)
        for i in range(args.repeat):
            for result, once in zip(results, onces, strict=True):
                m = once()
                result.runs.append(m)
                print(
                    f"  {result.name} [{i + 1}/{args.repeat}]: {m.wall_s:.2f}s, "
                    f"{fmt_mib(m.tree_rss)} tree RSS"
                )
        return report(count, total, *results)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def history_main(args) -> int:
    """``--history``: see bench/history.py."""
    from bench import history

    byte_compile_drbackup()
    tmp = Path(tempfile.mkdtemp(prefix="drbackup-bench-history-"))
    moto, endpoint = start_moto(tmp)
    env = {**os.environ, "DRBACKUP_PASSPHRASE": PASSPHRASE, "DRBACKUP_HOME": str(tmp)}
    try:
        print(machine_summary())
        config = write_config(tmp, endpoint, 0)
        return history.run(args, endpoint, env, drbackup, config, COPY_SCRIPT, FLOOR_SCRIPT)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def report(count: int, total: int, copy, snap, again, floor) -> int:
    """Print the table and the checks; 1 if a target is missed."""
    import json

    uploaded = json.loads(again.runs[-1].stdout)["meta"]["uploaded_bytes"]
    rows = []
    for result in (copy, snap, again, floor):
        m = result.best
        rows.append(
            [
                result.name,
                f"{m.wall_s:.2f}s",
                f"{total / m.wall_s / (1 << 20):.1f} MiB/s",
                f"{m.cpu_s:.2f}s",
                fmt_mib(m.max_rss),
                f"{result.spread:.0%}",
            ]
        )
    print()
    print(render_table(["run", "wall", "throughput", "cpu", "peak rss", "spread"], rows))
    first = snap.best.wall_s
    ratio = copy.best.wall_s / first
    second = again.best.wall_s / first
    beyond = (again.best.wall_s - floor.best.wall_s) / first
    checks = [
        (
            f"snapshot throughput / boto3 copy >= {COPY_TARGET}",
            ratio >= COPY_TARGET,
            f"{ratio:.2f}x",
        ),
        (
            f"unchanged snapshot <= {SECOND_TARGET:.0%} of the first",
            second <= SECOND_TARGET,
            f"{second:.1%}",
        ),
        (
            f"unchanged snapshot minus start+list <= {SECOND_TARGET:.0%} of the first",
            beyond <= SECOND_TARGET,
            f"{beyond:.1%}",
        ),
        ("unchanged snapshot uploads 0 bytes", uploaded == 0, f"{uploaded} bytes"),
    ]
    print()
    for text, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}: {value}")
    print(
        f"      {count} objects, {fmt_size(total)}; peak RSS of the first snapshot "
        f"{fmt_mib(snap.best.max_rss)}; 'start+list' is a child that imports drbackup's CLI "
        "and lists the bucket: what any incremental snapshot must spend"
    )
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
