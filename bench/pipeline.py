"""drbackup's streaming pipeline (zstd → AES-256-GCM → SHA-256 → storage) against the zstd
command on the same file.

    .venv/bin/python bench/pipeline.py [--size 1GiB] [--level 1] [--threads 0] [--repeat 3]
                                       [--keep-input] [--no-null] [--strict]

1. Generates (once; reused while it exists) a file of mixed realistic data under /tmp:
   CSV-like rows with md5 hex, numbers, timestamps and words, JSON events, and some random
   bytes, so that zstd -3 compresses it about 2-3:1.
2. Runs ``zstd -<level> -T<threads> -c FILE > /dev/null`` (the baseline).
3. Runs drbackup in a child process per phase (so that peak RSS is that phase's alone,
   read with ``wait4``): backup of the file, streamed through ``iter_blocks_threaded`` as a
   pg_dump pipe is, into a LocalStorage repository on /tmp; the same into a null storage
   that discards what it is given (the pipeline alone); and a restore (decode) of the
   backup to nowhere.
4. Repeats all of it ``--repeat`` times, interleaved, and keeps the fastest run of each
   (the machine is shared: the spread column says how noisy it was).
5. Prints MB/s of each, the pipeline/zstd ratio and whether the targets are met:
   throughput >= 0.8x the zstd command (the null-storage run: zstd writes to /dev/null
   too), peak RSS < 150 MB.  ``--strict`` exits 1 if not.

MB/s are plaintext megabytes (10^6 bytes) per second of wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `drbackup` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_summary, render_table, run_measured  # noqa: E402

MB = 1000 * 1000
MiB = 1 << 20
TARGET_RATIO = 0.8
TARGET_RSS = 150 * MB
POOL_SIZE = 64 * MiB  # distinct rows; slices of it recur far beyond zstd's window
FAST_SCRYPT = {"n": 1024, "r": 8, "p": 1}
PASSPHRASE = "bench"


# --- the input --------------------------------------------------------------------------

_WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "backup",
    "restore", "drill", "snapshot", "manifest", "bucket", "replica", "archive", "ledger",
    "invoice", "shipment", "customer",
]  # fmt: skip
_STATUS = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]


def _row(rnd: random.Random, i: int) -> str:
    """One line of a dump: an order row, a JSON event or a sensor reading."""
    kind = i % 3
    ts = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{rnd.randrange(60):02d}"
    if kind == 0:
        note = " ".join(rnd.choices(_WORDS, k=rnd.randrange(0, 6)))
        return (
            f"{i}\t{rnd.randrange(1, 200_000)}\t{_STATUS[rnd.randrange(6)]}\t"
            f"{rnd.uniform(1, 900):.2f}\tEUR\t{ts}+00\t{hashlib.md5(str(i).encode()).hexdigest()}\t{note}\n"
        )
    if kind == 1:
        return (
            f'{i}\t{ts}.{rnd.randrange(10**6):06d}+00\t{{"user": {rnd.randrange(100_000)}, '
            f'"path": "/{rnd.choice(_WORDS)}/{rnd.choice(_WORDS)}", "token": '
            f'"{rnd.getrandbits(128):032x}", "amount": {rnd.uniform(0, 500):.2f}, '
            f'"ok": {"true" if rnd.random() < 0.95 else "false"}}}\n'
        )
    return (
        f"{1 + i % 5000}\t{ts}+00\t{rnd.uniform(-20, 40)!r}\t{rnd.uniform(0, 100):.4f}\t"
        f"{950 + rnd.random() * 100!r}\t{rnd.randrange(16)}\n"
    )


def _pool(seed: int) -> bytes:
    rnd = random.Random(seed)
    parts, total, i = [], 0, 0
    while total < POOL_SIZE:
        block = "".join(_row(rnd, i + k) for k in range(1000)).encode()
        parts.append(block)
        total += len(block)
        i += 1000
    return b"".join(parts)[:POOL_SIZE]


def generate_input(path: Path, size: int, seed: int = 1) -> None:
    """Write ``size`` bytes to ``path``: slices of a pool of distinct rows taken at random
    offsets, with 8% random bytes (bytea, compressed columns) mixed in."""
    rnd = random.Random(seed)
    pool = _pool(seed)
    tmp = path.with_suffix(".partial")
    written = 0
    with open(tmp, "wb") as out:
        while written < size:
            n = min(rnd.randrange(64 << 10, 1 << 20), size - written)
            noise = rnd.randbytes(n * 8 // 100)
            start = rnd.randrange(len(pool) - n)
            out.write(noise + pool[start : start + n - len(noise)])
            written += n
    tmp.replace(path)


def input_path(size: int) -> Path:
    return Path(tempfile.gettempdir()) / f"drbackup-bench-v1-{size}.dat"


def warm_cache(path: Path) -> None:
    """Read the file once so both contenders read it from the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


# --- the children (one phase each) ----------------------------------------------------------


class NullStorage:
    """Discards data objects; keeps small objects (header, manifests) in memory."""

    url = "null:"

    def __init__(self):
        from drbackup.storage.base import Capabilities

        self.capabilities = Capabilities()
        self._small: dict[str, bytes] = {}
        self._sizes: dict[str, int] = {}

    def prepare(self) -> None:
        pass

    def check(self) -> None:
        pass

    def put(self, key, reader) -> int:
        size, keep = 0, []
        while chunk := reader.read(MiB):
            size += len(chunk)
            if size <= MiB:
                keep.append(chunk)
        self._sizes[key] = size
        if size <= MiB:
            self._small[key] = b"".join(keep)
        return size

    def get(self, key) -> bytes:
        return self._small[key]

    def stat(self, key):
        from drbackup.storage.base import ObjectInfo

        return ObjectInfo(key, self._sizes[key])

    def exists(self, key) -> bool:
        return key in self._sizes

    def list(self, prefix=""):
        return iter(())

    def delete(self, key) -> None:
        self._sizes.pop(key, None)
        self._small.pop(key, None)


def child_generate(args) -> dict:
    started = time.perf_counter()
    generate_input(args.input, args.size)
    return {"seconds": time.perf_counter() - started}


def child_encode(args) -> dict:
    from drbackup.codec.pipeline import CodecSettings, iter_blocks_threaded
    from drbackup.repository.keyring import Secrets
    from drbackup.repository.repo import Repository
    from drbackup.storage.local import LocalStorage

    storage = NullStorage() if args.repo == "null" else LocalStorage(args.repo)
    repo = Repository.init(storage, Secrets(passphrase=PASSPHRASE), scrypt_params=FAST_SCRYPT)
    repo.codec = CodecSettings(level=args.level, threads=args.threads)
    started, cpu = time.perf_counter(), _cpu_seconds()
    with open(args.input, "rb", buffering=0) as source, repo.new_backup("bench", "file") as w:
        item = w.add_stream("data", "file", iter_blocks_threaded(source))
        manifest = w.commit()
    return {"seconds": time.perf_counter() - started, "cpu": _cpu_seconds() - cpu, "size": item.size,
            "stored": item.stored_size, "backup_id": manifest.backup_id}  # fmt: skip


def child_decode(args) -> dict:
    from drbackup.repository.keyring import Secrets
    from drbackup.repository.repo import Repository
    from drbackup.storage.local import LocalStorage

    repo = Repository.open(LocalStorage(args.repo), Secrets(passphrase=PASSPHRASE))
    started, cpu = time.perf_counter(), _cpu_seconds()
    (ref,) = repo.list_refs("bench")
    item = repo.load_manifest(ref).items[0]
    size = 0
    with repo.open_item(item) as reader:
        for block in reader:
            size += len(block)
    return {"seconds": time.perf_counter() - started, "cpu": _cpu_seconds() - cpu, "size": size}


def _cpu_seconds() -> float:
    """CPU time of this process so far, every thread included (zstd's workers too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(phase: str, args, repo: str) -> tuple[dict, object]:
    argv = [sys.executable, __file__, "--child", phase, "--repo", repo, "--input", str(args.input),
            "--level", str(args.level), "--threads", str(args.threads), "--size", str(args.size)]  # fmt: skip
    m = run_measured(argv).check(f"{phase} child")
    return json.loads(m.stdout), m


# --- the run --------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "kb": 1000, "mb": MB, "gb": 1000 * MB}
    t = text.strip().lower().removesuffix("ib").removesuffix("i")
    for suffix in sorted(units, key=len, reverse=True):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * units[suffix])
    return int(t)


def run_zstd(path: Path, level: int, threads: int):
    argv = ["sh", "-c", f'exec zstd -q -{level} -T{threads} -c "$1" > /dev/null', "zstd", str(path)]
    return run_measured(argv).check("zstd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=1 << 30, help="input size (default 1GiB)")
    p.add_argument("--level", type=int, default=1, help="zstd level (default 1, as drbackup)")
    p.add_argument("--threads", type=int, default=0, help="zstd threads, 0 = all cores (default)")
    p.add_argument("--keep-input", action="store_true", help="keep the generated input file")
    p.add_argument("--no-null", action="store_true", help="skip the null-storage run")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (default 3)")
    p.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--repo", help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    if shutil.which("zstd") is None:
        print("bench: zstd command not found", file=sys.stderr)
        return 2

    args.input = input_path(args.size)
    print(f"machine: {machine_summary()}")
    if not args.input.exists():  # in a child: the harness stays small (see measure())
        gen, _ = run_child("generate", args, "")
        print(f"generated {args.input} ({args.size / MB:.0f} MB) in {gen['seconds']:.1f}s")
    warm_cache(args.input)
    repo_dir = Path(tempfile.mkdtemp(prefix="drbackup-bench-repo-"))
    try:
        rows, verdict = measure(args, repo_dir)
    finally:
        shutil.rmtree(repo_dir, ignore_errors=True)
        if not args.keep_input:
            args.input.unlink(missing_ok=True)
    print()
    print(f"best of {args.repeat} runs each; spread = slowest / fastest - 1")
    print(
        render_table(
            ["run", "seconds", "MB/s", "min cpu s", "peak RSS MB", "spread", "notes"], rows
        )
    )
    print()
    for line in verdict[1]:
        print(line)
    return 1 if args.strict and not verdict[0] else 0


class Phase:
    """The runs of one measured phase; figures are those of the fastest run."""

    def __init__(self, name: str, note: str = ""):
        self.name, self.note = name, note
        self.runs: list[tuple[float, object, dict]] = []  # (seconds, Measurement, child output)

    def add(self, seconds: float, measurement, output: dict | None = None) -> None:
        self.runs.append((seconds, measurement, output or {}))

    @property
    def cpu(self) -> float:
        """Least CPU seconds of any run: of the phase alone for drbackup's children (their
        own measure), of the whole process for zstd.  Less disturbed by a busy machine than
        wall time."""
        return min(r[2].get("cpu", r[1].cpu_s) for r in self.runs)

    @property
    def seconds(self) -> float:
        return min(r[0] for r in self.runs)

    @property
    def spread(self) -> float:
        times = [r[0] for r in self.runs]
        return max(times) / min(times) - 1

    @property
    def peak_rss(self) -> int:
        return max(r[1].max_rss for r in self.runs)

    def row(self, size: int) -> list[str]:
        return [self.name, f"{self.seconds:.2f}", f"{size / MB / self.seconds:.0f}",
                f"{self.cpu:.2f}", f"{self.peak_rss / MB:.0f}", f"{self.spread:.0%}",
                self.note]  # fmt: skip


def measure(args, repo_dir: Path):
    """Run every phase ``--repeat`` times, interleaved so that a busy spell on the machine
    hits all of them alike; keep the fastest run of each.

    The harness stays small on purpose: a child's ru_maxrss starts from its parent's RSS
    at fork, so a large harness would inflate every child's peak.
    """
    size = args.size
    zstd = Phase(f"zstd -{args.level} -T{args.threads} -c FILE > /dev/null")
    local = Phase("drbackup backup → LocalStorage /tmp", "incl. fsync of the object")
    null = Phase("drbackup backup → null storage", "the pipeline alone")
    restore = Phase("drbackup restore → nowhere", "authenticate, decompress, check sha256")
    stored = 0
    for _ in range(args.repeat):
        z = run_zstd(args.input, args.level, args.threads)
        zstd.add(z.wall_s, z)
        shutil.rmtree(repo_dir, ignore_errors=True)
        repo_dir.mkdir()
        out, m = run_child("encode", args, str(repo_dir))
        local.add(out["seconds"], m, out)
        stored = out["stored"]
        out, m = run_child("decode", args, str(repo_dir))
        if out["size"] != size:
            raise RuntimeError(f"restore returned {out['size']} bytes, expected {size}")
        restore.add(out["seconds"], m, out)
        if not args.no_null:
            out, m = run_child("encode", args, "null")
            null.add(out["seconds"], m, out)
    local.note += f"; stored {size / stored:.2f}:1"
    phases = [zstd, local] + ([null] if not args.no_null else []) + [restore]
    rows = [p.row(size) for p in phases]
    pipeline = null if not args.no_null else local
    ratio = zstd.seconds / pipeline.seconds
    peak = max(local.peak_rss, pipeline.peak_rss)
    met_speed, met_rss = ratio >= TARGET_RATIO, peak < TARGET_RSS
    lines = [
        f"pipeline ({pipeline.name.split('→ ')[1]}) / zstd throughput: {ratio:.2f}x "
        f"(target >= {TARGET_RATIO}x): " + ("met" if met_speed else "MISSED"),
        f"with LocalStorage (incl. fsync): {zstd.seconds / local.seconds:.2f}x",
        f"by cpu time (zstd cpu / pipeline cpu; the wall ratio on two idle cores, when both "
        f"keep the cores busy -- trust it when the spread is large): {zstd.cpu / pipeline.cpu:.2f}x",
        f"peak RSS of a backup: {peak / MB:.0f} MB (target < {TARGET_RSS / MB:.0f} MB): "
        + ("met" if met_rss else "MISSED"),
        f"restore: {size / MB / restore.seconds:.0f} MB/s of plaintext",
    ]
    return rows, (met_speed and met_rss, lines)


CHILDREN = {"generate": child_generate, "encode": child_encode, "decode": child_decode}


if __name__ == "__main__":
    sys.exit(main())
