"""Versioned buckets (``bench/snapshot.py --history``): what a capture costs after 1% changes,
and restore to a second against a plain boto3 copy, on the moto S3 server.

Fills a versioned bucket with ``--history-objects`` small objects (1 KiB), then measures
each as its own child process (common.py):

    first        the first snapshot: lists the versions, reads and stores every object
    incremental  after ``--changed`` of the objects were overwritten: lists the versions
                 and the objects again, reads and stores only the changed ones
    full         ``--full`` on the same state: reads every object again (uploads nothing new)
    list         children that list the objects, and the versions, once: the floor of any
                 listing-based capture (a snapshot of a versioned bucket lists both)
    restore@T    ``restore minio --point-in-time T`` (T between the changes and the capture)
    boto3 copy   list + get + put of the current objects into another bucket

and prints wall time, objects read and bytes stored for each capture, and objects per
second for the two restores.  No targets: the figures go to bench/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from bench.common import fmt_size, render_table, run_measured

CHANGE_SCRIPT = """
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, bucket, count, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
def change(i):
    s3.put_object(Bucket=bucket, Key=f"files/{i % 97:02d}/{i:07d}.txt", Body=b"changed %d" % i)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(change, range(0, count, step)))
"""


VERSIONS_SCRIPT = """
import sys
from drbackup.sources.buckets.client import BucketClient
client = BucketClient(sys.argv[1], "testing", "testing", secure=False)
print(sum(1 for _ in client.list_versions(sys.argv[2])))
"""


def fill_versioned(s3, bucket: str, count: int) -> int:
    """``count`` objects of 1 KiB in a new versioned bucket; their total size."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def put(i: int) -> None:
        body = (b"%07d," % i) * 128
        s3.put_object(Bucket=bucket, Key=f"files/{i % 97:02d}/{i:07d}.txt", Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(count)))
    return count * 1024


def capture_figures(stdout: bytes, bucket: str) -> tuple[int, int, int]:
    """(objects read, bytes read, bytes stored) of a snapshot's ``--json`` record."""
    meta = json.loads(stdout)["meta"]["buckets"][bucket]
    history = meta.get("history") or {}
    return (
        meta["transferred"] + history.get("read", 0),
        meta["transferred_bytes"] + history.get("read_bytes", 0),
        meta["uploaded_bytes"] + history.get("stored_bytes", 0),
    )


def run(args, endpoint: str, env: dict, drbackup, config, copy_script, floor_script) -> int:
    """The measurements above; ``drbackup(config, *args)`` builds a command line."""
    from bench.snapshot import SOURCE, client

    s3 = client(endpoint)
    total = fill_versioned(s3, SOURCE, args.history_objects)
    s3.create_bucket(Bucket="repo")
    print(f"source: {args.history_objects} objects, {fmt_size(total)}, versioned")
    subprocess.run(drbackup(config, "init", "--scrypt-log-n", "10"), env=env, check=True)
    snap = drbackup(config, "snapshot", "minio", "files", "--json", "--workers", str(args.workers))
    first = run_measured(snap, env=env).check("first snapshot")
    step = max(1, round(1 / args.changed))
    change = [sys.executable, "-c", CHANGE_SCRIPT, endpoint, SOURCE]
    subprocess.run([*change, str(args.history_objects), str(step)], check=True)
    changed_in = int(time.time())
    while int(time.time()) == changed_in:  # T: a second after every change's second
        time.sleep(0.01)
    at = datetime.now(UTC).replace(microsecond=0)
    incremental = run_measured(snap, env=env).check("incremental snapshot")
    full = run_measured([*snap, "--full"], env=env).check("full snapshot")
    host = endpoint.removeprefix("http://")
    floor = [sys.executable, "-c", floor_script, host, SOURCE]
    listing = run_measured(floor, env=env).check("listing")
    versions = [sys.executable, "-c", VERSIONS_SCRIPT, host, SOURCE]
    version_listing = run_measured(versions, env=env).check("version listing")
    restore = drbackup(config, "restore", "minio", "files", "--into-bucket", "restored-at")
    restore += ["--point-in-time", at.isoformat(), "--workers", str(args.workers)]
    restored = run_measured(restore, env=env).check("restore to a second")
    copy = [sys.executable, "-c", copy_script, endpoint, SOURCE, "copied", str(args.workers)]
    copied = run_measured(copy, env=env).check("boto3 copy")
    captures = (first, incremental, full, listing, version_listing)
    return report(args, captures, (restored, copied))


def report(args, captures, restores) -> int:
    from bench.snapshot import SOURCE

    first, incremental, full, listing, version_listing = captures
    rows = []
    for name, m in (("first", first), ("incremental", incremental), ("full", full)):
        read, read_bytes, stored = capture_figures(m.stdout, SOURCE)
        rows.append([name, f"{m.wall_s:.1f}s", read, fmt_size(read_bytes), fmt_size(stored)])
    rows.append(["list objects (once)", f"{listing.wall_s:.1f}s", 0, "0 B", "0 B"])
    rows.append(["list versions (once)", f"{version_listing.wall_s:.1f}s", 0, "0 B", "0 B"])
    print()
    print(render_table(["capture", "wall", "objects read", "bytes read", "stored"], rows))
    count = args.history_objects
    restored, copied = restores
    print()
    print(
        render_table(
            ["restore", "wall", "objects/s"],
            [
                ["restore --point-in-time", f"{restored.wall_s:.1f}s", f"{count / restored.wall_s:.0f}"],
                ["boto3 copy", f"{copied.wall_s:.1f}s", f"{count / copied.wall_s:.0f}"],
            ],
        )
    )  # fmt: skip
    ratio = incremental.wall_s / full.wall_s
    print(
        f"\nincremental after {args.changed:.0%} changes: {ratio:.0%} of a --full capture's "
        f"time; restore to a second at {copied.wall_s / restored.wall_s:.2f}x a boto3 copy"
    )
    return 0
