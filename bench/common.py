"""Shared helpers for the benchmarks: measured child processes, repetition, tables, and a
generated PostgreSQL database whose dump compresses about 2-3:1 with zstd.

Measuring.  :func:`run_measured` runs one command as its own child and reports its wall
time, the CPU time of its whole process tree (``wait4``), the peak RSS of the largest single
process in that tree (``ru_maxrss``, the kernel's high-water mark), and the peak *sum* of
RSS over the tree, sampled from /proc every 50 ms (a short spike between samples can be
missed; the largest-process figure cannot).  The PostgreSQL server's backends are not in the
tree: they belong to the postmaster.

Repetition.  :func:`best_of` runs a measurement several times and keeps the fastest; its
``spread`` (slowest / fastest - 1) says how noisy the machine was.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


# --- the command under test ----------------------------------------------------------------


def byte_compile_drbackup() -> None:
    """Byte-compile the drbackup package, as ``pip install`` does for an installed one.

    An editable checkout run with PYTHONDONTWRITEBYTECODE=1 (set on these machines, and in
    many images) would otherwise compile its sources at every start: ~0.25 s of each
    command's wall time that no installed drbackup spends.
    """
    import compileall

    import drbackup

    compileall.compile_dir(Path(drbackup.__file__).parent, quiet=1)


# --- measuring one child -----------------------------------------------------------------


@dataclass
class Measurement:
    """One run of one command."""

    wall_s: float
    cpu_s: float  # user + system of the child and every descendant it waited for
    max_rss: int  # bytes: peak RSS of the largest single process in the tree
    tree_rss: int  # bytes: peak of the summed RSS of the tree (sampled)
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    server_cpu_s: float = 0.0  # CPU of the postgresql server meanwhile (see server_cpu)
    tool_rss: int = 0  # bytes: peak summed RSS of the tree without ``exclude``d processes
    tool_max_rss: int = 0  # bytes: peak RSS of the largest such process (sampled)

    def check(self, what: str) -> Measurement:
        """Return self, or raise RuntimeError with the tail of stderr if the command failed."""
        if self.returncode != 0:
            tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{what} failed (exit {self.returncode}): " + " | ".join(tail))
        return self


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's children list), [] if it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Summed RSS in bytes of ``pid`` and all its descendants, now."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _rss(current)
        todo.extend(_children(current))
    return total


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def tool_rss(pid: int, exclude: frozenset[str]) -> tuple[int, int]:
    """(summed RSS, largest RSS) in bytes of ``pid``'s tree without processes whose name is
    in ``exclude`` (a restore's own postgresql server, say), now."""
    total, largest, todo = 0, 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(_children(current))
        if _comm(current) not in exclude:
            rss = _rss(current)
            total, largest = total + rss, max(largest, rss)
    return total, largest


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int, interval: float, exclude: frozenset[str] = frozenset()):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.exclude, self.tool_peak, self.tool_max = exclude, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.pid))
            if self.exclude:
                total, largest = tool_rss(self.pid, self.exclude)
                self.tool_peak = max(self.tool_peak, total)
                self.tool_max = max(self.tool_max, largest)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_fields(pid: int) -> tuple[float, float]:
    """(own CPU, CPU of waited-for children) of ``pid`` in seconds, (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def server_cpu(postmaster_pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, number of live children) of a postgresql server.

    The postmaster's own CPU, that of its exited children (backends are reaped by it, so
    their CPU lands in its ``cutime``), and that of its live children.  The difference of
    two readings is the server's CPU in between, whichever backends came and went.
    """
    own, reaped = _cpu_fields(postmaster_pid)
    children = _children(postmaster_pid)
    return own + reaped + sum(_cpu_fields(pid)[0] for pid in children), len(children)


def _drain(stream, sink: list[bytes]) -> None:
    sink.append(stream.read())


def run_measured(
    argv: Sequence[str],
    *,
    stdout=subprocess.PIPE,
    env: dict[str, str] | None = None,
    sample_interval: float = 0.05,
    postmaster_pid: int | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Measurement:
    """Run ``argv`` as one child and measure it (see the module docstring).

    ``stdout`` is PIPE (captured), DEVNULL, or an open file.  stderr is always captured.
    With ``postmaster_pid``, also the CPU that server used meanwhile (``server_cpu_s``).
    With ``exclude`` (process names), also the RSS of the tree without them (``tool_rss``,
    ``tool_max_rss``).  Never raises on a non-zero exit; see :meth:`Measurement.check`.
    """
    server_before = server_cpu(postmaster_pid) if postmaster_pid else (0.0, 0)
    m = _run_measured(argv, stdout, env, sample_interval, exclude)
    if postmaster_pid:
        deadline = time.monotonic() + 5
        while server_cpu(postmaster_pid)[1] > server_before[1] and time.monotonic() < deadline:
            time.sleep(0.01)  # backends of the command are still exiting
        m.server_cpu_s = server_cpu(postmaster_pid)[0] - server_before[0]
    return m


def _run_measured(argv, stdout, env, sample_interval, exclude=frozenset()) -> Measurement:
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, env=env
    )
    sampler = _TreeSampler(proc.pid, sample_interval, exclude)
    sampler.start()
    outputs: dict[str, list[bytes]] = {"out": [], "err": []}
    readers = [threading.Thread(target=_drain, args=(proc.stderr, outputs["err"]))]
    if stdout is subprocess.PIPE:
        readers.append(threading.Thread(target=_drain, args=(proc.stdout, outputs["out"])))
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    sampler.done.set()
    for reader in readers:
        reader.join()
    sampler.join()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return Measurement(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        tree_rss=max(sampler.peak, usage.ru_maxrss * 1024),
        returncode=proc.returncode,
        stdout=b"".join(outputs["out"]),
        stderr=b"".join(outputs["err"]),
        tool_rss=sampler.tool_peak,
        tool_max_rss=sampler.tool_max,
    )


# --- repetition ---------------------------------------------------------------------------


@dataclass
class Result:
    """The runs of one named measurement; figures are those of the fastest run."""

    name: str
    runs: list[Measurement] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # e.g. output size, read from the best run

    @property
    def best(self) -> Measurement:
        return min(self.runs, key=lambda m: m.wall_s)

    @property
    def spread(self) -> float:
        """Slowest wall time over fastest, minus one (0.05 = runs differed by 5%)."""
        walls = [m.wall_s for m in self.runs]
        return max(walls) / min(walls) - 1 if len(walls) > 1 else 0.0


def best_of(name: str, repeat: int, run_once: Callable[[], Measurement], *, log=print) -> Result:
    """Call ``run_once`` ``repeat`` times (each a fresh child); keep every run."""
    result = Result(name)
    for i in range(repeat):
        m = run_once()
        result.runs.append(m)
        log(f"  {name} [{i + 1}/{repeat}]: {m.wall_s:.2f}s, {fmt_mib(m.tree_rss)} tree RSS")
    return result


# --- formatting -----------------------------------------------------------------------------


def fmt_mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too), columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine_summary() -> str:
    """``2 cores, 23.5 GiB RAM, Linux 6.1, load 1.2`` -- what the figures were taken on."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    load = os.getloadavg()[0]
    cpu = _cpu_model()
    return (
        f"{os.cpu_count()} cores ({cpu}), {fmt_size(mem)} RAM, "
        f"{platform.system()} {platform.release()}, load {load:.2f} at start"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def self_max_rss() -> int:
    """Peak RSS in bytes of this process (the bench harness itself)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- a database that does not compress trivially -------------------------------------------

# Row counts per GiB of database (tables + indexes), calibrated on PostgreSQL 15: each table
# is about a quarter of the size.  Text is md5 hex (compresses ~1.8:1), words drawn from a
# small vocabulary (~4:1), random floats (~1.5:1), timestamps and small integers (well); the
# whole dump compresses ~2.8:1 with zstd level 3 (customers 3.1, orders 2.5, events 3.0,
# readings 2.7).
ROWS_PER_GIB = {
    "customers": 1_480_000,
    "orders": 1_380_000,
    "events": 770_000,
    "readings": 2_140_000,
}
BATCH_ROWS = 250_000

SCHEMA_SQL = """
CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL,
    balance numeric(12, 2) NOT NULL,
    bio text
);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    currency char(3) NOT NULL,
    created_at timestamptz NOT NULL,
    shipped_at timestamptz,
    reference text NOT NULL,
    note text
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    session uuid NOT NULL,
    payload jsonb NOT NULL
);
CREATE INDEX events_occurred_idx ON events (occurred_at);
CREATE TABLE readings (
    device_id integer NOT NULL,
    taken_at timestamptz NOT NULL,
    temperature double precision NOT NULL,
    humidity real NOT NULL,
    pressure double precision NOT NULL,
    flags smallint NOT NULL,
    PRIMARY KEY (device_id, taken_at)
);
CREATE FUNCTION bench_words(n integer) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT string_agg((ARRAY['alpha','bravo','charlie','delta','echo','foxtrot','golf',
        'hotel','india','juliet','kilo','lima','mike','november','oscar','papa','quebec',
        'romeo','sierra','tango','uniform','victor','whiskey','xray','yankee','zulu',
        'backup','restore','drill','snapshot','manifest','bucket','replica','archive',
        'ledger','invoice','shipment','customer','warehouse','pallet'])[1 + floor(random() * 40)::int],
        ' ')
    FROM generate_series(1, n)
$$;
"""

INSERT_SQL = {
    "customers": """
INSERT INTO customers
SELECT i,
       initcap(bench_words(2)),
       'user' || i || '@' || (ARRAY['example.com','mail.test','corp.invalid'])[1 + i %% 3],
       (ARRAY['DE','FR','US','GB','JP','BR','IN','NL'])[1 + (i * 7) %% 8],
       timestamptz '2020-01-01' + (i * interval '37 seconds'),
       round((random() * 20000 - 5000)::numeric, 2),
       CASE WHEN i %% 4 = 0 THEN NULL
            ELSE bench_words(3 + i %% 9) || ' ' || md5(random()::text) END
FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS i
""",
    "orders": """
INSERT INTO orders
SELECT i,
       1 + floor(random() * %(customers)s::integer)::int,
       (ARRAY['new','paid','shipped','delivered','cancelled','refunded'])[1 + floor(random() * 6)::int],
       round((random() * 900 + 1)::numeric, 2),
       (ARRAY['EUR','USD','GBP'])[1 + floor(random() * 3)::int],
       timestamptz '2021-01-01' + (i * interval '13 seconds'),
       CASE WHEN random() < 0.7
            THEN timestamptz '2021-01-01' + (i * interval '13 seconds') + random() * interval '9 days'
       END,
       md5(i::text),
       CASE WHEN random() < 0.5 THEN md5(random()::text) || ' ' || bench_words(3) END
FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS i
""",
    "events": """
INSERT INTO events
SELECT i,
       timestamptz '2023-01-01' + (i * interval '2 seconds') + random() * interval '1 second',
       (ARRAY['login','logout','view','click','purchase','error'])[1 + floor(random() * 6)::int],
       md5(random()::text)::uuid,
       jsonb_build_object(
           'user', 1 + floor(random() * 100000)::int,
           'path', '/' || bench_words(2),
           'token', md5(random()::text) || md5(random()::text),
           'amount', round((random() * 500)::numeric, 2),
           'items', floor(random() * 12)::int,
           'ok', random() < 0.95,
           'agent', (ARRAY['curl/8.5','Mozilla/5.0 (X11; Linux x86_64)','okhttp/4.12',
                           'python-requests/2.31'])[1 + floor(random() * 4)::int])
FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS i
""",
    "readings": """
INSERT INTO readings
SELECT 1 + i %% 5000,
       timestamptz '2024-01-01' + (i / 5000) * interval '1 minute',
       random() * 60 - 20,
       (random() * 100)::real,
       950 + random() * 100,
       floor(random() * 16)::smallint
FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS i
""",
}


def row_counts(size_gib: float) -> dict[str, int]:
    """Rows per table for a database of about ``size_gib`` GiB."""
    return {name: max(1000, round(per * size_gib)) for name, per in ROWS_PER_GIB.items()}


def generate_database(conn, size_gib: float, *, log=print) -> dict[str, int]:
    """Create the bench schema in the (empty) database of ``conn`` (autocommit) and fill it
    server-side with INSERT ... SELECT generate_series, then VACUUM ANALYZE.

    Returns the row count of each table.  Raises psycopg errors.
    """
    counts = row_counts(size_gib)
    conn.execute(SCHEMA_SQL)
    for table, total in counts.items():
        started = time.monotonic()
        for lo in range(1, total + 1, BATCH_ROWS):
            hi = min(total, lo + BATCH_ROWS - 1)
            conn.execute(INSERT_SQL[table], {"lo": lo, "hi": hi, "customers": counts["customers"]})
        log(f"  {table}: {total:,} rows in {time.monotonic() - started:.0f}s")
    conn.execute("VACUUM ANALYZE")
    return counts
