"""`trellis bench`: the engine measured with real django-q2 workers.

`run()` creates a throwaway database on the configured server (a temporary SQLite file, or
a `trellis_bench` PostgreSQL database) and runs the command again inside it (`--inner`),
so this process, its `trellis worker` children and the `trellis serve` it starts all use
that database and a queue name of their own; the database is dropped afterwards. Each
shape is repeated and the median of every figure is reported.
"""

import contextlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from unittest import mock
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, connections
from django.db.models import Max
from django.test.utils import CaptureQueriesContext
from django.urls import Resolver404, resolve
from django.utils import timezone
from django_q.brokers import get_broker

from runs import procfs, services
from runs.engine import dispatch, executors, transitions
from runs.engine import worker as engine_worker
from runs.models import Run, RunEvent, StepRun
from runs.status import RUN_TERMINAL, STEP_TERMINAL, RunStatus, StepStatus, Trigger
from workflows.services import workflow_save

SHAPES = ("queries", "chain", "fanout", "runs", "latency", "memory", "api", "bulk")
WORKER_SHAPES = ("chain", "fanout", "runs", "latency")
SERVER_SHAPES = ("memory", "api")
BENCH_DATABASE = "trellis_bench"  # + this process's id: two benches never share one
RUN_TIMEOUT = 300.0

# (figure, comparison, target, what): the targets on a 2-core machine.
TARGETS = [
    ("chain.per_step_ms", "<=", 2, "chain: per-step overhead, ms"),
    ("fanout.steps_per_s", ">=", 1000, "fan-out: steps/s"),
    ("runs.runs_per_s", ">=", 200, "runs: runs/s (3-step chains)"),
    ("latency.to_running_p95_ms", "<=", 20, "trigger-to-running p95, ms"),
    ("api.list_p95_ms", "<=", 30, "GET /runs filtered, p95 ms at 1M runs"),
    ("api.list_rps", ">=", 800, "GET /runs filtered, requests/s"),
    ("api.post_rps", ">=", 400, "POST /runs, requests/s"),
    ("bulk.1000.seconds", "<=", 0.5, "bulk start of 1,000 runs, s"),
    ("bulk.100000.seconds", "<=", 20, "bulk start of 100,000 runs, s"),
    ("memory.pss_mib", "<=", 250, "idle web + 2 workers, MiB (PSS)"),
]


class BenchError(Exception):
    pass


@dataclass
class Options:
    shapes: list[str]
    repeat: int = 3
    workers: int = 2
    scale: float = 1.0

    def size(self, full: int, least: int = 2) -> int:
        return max(least, round(full * self.scale))

    def argv(self) -> list[str]:
        return [
            *("--shape", ",".join(self.shapes)),
            *("--repeat", str(self.repeat)),
            *("--workers", str(self.workers)),
            *("--scale", str(self.scale)),
        ]


def parse_shapes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or "all" in names:
        return list(SHAPES)
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        raise BenchError(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)} or all")
    return [shape for shape in SHAPES if shape in names]


def api_available() -> bool:
    try:
        return resolve("/api/v1/runs").url_name == "runs"
    except Resolver404:
        return False


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the outer process: a throwaway database ------------------------------------------


def run(options: Options) -> dict:
    """Create the bench database, run the bench inside it in a child process, drop it."""
    url, drop = _throwaway_database()
    queue = f"bench-{os.getpid()}-{secrets.token_hex(3)}"
    env = {**os.environ, "DATABASE_URL": url, "TRELLIS_QUEUE_NAME": queue}
    try:
        log(f"database {url.rsplit('@', 1)[-1]}, queue {env['TRELLIS_QUEUE_NAME']}")
        child = subprocess.run(
            [sys.executable, "-m", "config.cli", "bench", "--inner", *options.argv()],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
    finally:
        drop()
        if settings.REDIS_URL:  # tasks a failed bench left behind
            get_broker(list_key=queue).delete_queue()
    if child.returncode != 0:
        raise BenchError(f"the bench failed (exit {child.returncode}); see the lines above")
    return json.loads(child.stdout)


def _throwaway_database():
    if connection.vendor == "sqlite":
        folder = tempfile.mkdtemp(prefix="trellis-bench-")
        return f"sqlite:///{folder}/bench.sqlite3", lambda: shutil.rmtree(folder, True)
    if connection.vendor != "postgresql":
        raise BenchError(f"the bench supports SQLite and PostgreSQL, not {connection.vendor}")

    name = f"{BENCH_DATABASE}_{os.getpid()}"

    def drop():
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    try:
        drop()
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
    except DatabaseError as exc:
        raise BenchError(f"cannot create the database {name}: {exc}") from None
    url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{name}").geturl()
    return url, drop


# --- the inner process: the shapes -----------------------------------------------------


@dataclass
class Bench:
    options: Options
    workflows: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    references: list[float] = field(default_factory=list)  # every speed_reference_ms

    def env(self, **extra) -> dict:
        return {**os.environ, "TRELLIS_WORKERS": str(self.options.workers), **extra}

    def repeat(self, name: str, shape, *args) -> dict:
        """The median of `repeat` runs of the shape, each with the machine's speed
        reference taken just before it (`speed_reference_ms`)."""
        figures = []
        for number in range(1, self.options.repeat + 1):
            reference = speed_reference_ms()
            figures.append({**shape(self, *args), "speed_reference_ms": reference})
            self.references.append(reference)
            log(f"{name} {number}/{self.options.repeat}: {_brief(figures[-1])}")
        return median_of(figures)


def run_inside(options: Options) -> dict:
    """Measure every shape asked for, in the database this process is configured with."""
    load_before = os.getloadavg()
    call_command("migrate", interactive=False, verbosity=0)
    bench = Bench(options, workflows=_create_workflows(options))
    bench.results["load_average"] = {"before": load_before[0]}
    shapes = options.shapes
    if "queries" in shapes:
        bench.results["queries"] = count_queries(bench)
    if any(shape in shapes for shape in WORKER_SHAPES):
        _with_cluster(bench, [shape for shape in WORKER_SHAPES if shape in shapes])
    if "bulk" in shapes:  # before the million API runs, with no worker running
        sizes = (options.size(1_000, 10), options.size(100_000, 100))
        bench.results["bulk"] = {str(n): bench.repeat(f"bulk {n}", shape_bulk, n) for n in sizes}
    if any(shape in shapes for shape in SERVER_SHAPES):
        _with_server(bench)
    dispatch.broker().purge_queue()
    bench.results["load_average"]["after"] = os.getloadavg()[0]
    return report(bench)


def _create_workflows(options: Options) -> dict:
    documents = {
        "chain": _chain("bench-chain", options.size(50)),
        "fanout": _fanout("bench-fanout", options.size(200)),
        "runs": _chain("bench-runs", 3),
        "single": _chain("bench-single", 1),
        "bulk": _chain("bench-bulk", 1),
        "list": _chain("bench-list", 1),
    }
    return {key: workflow_save(document=doc, source="bench")[0] for key, doc in documents.items()}


def _chain(name: str, length: int) -> dict:
    steps = [{"id": f"s{i:03d}", "kind": "noop"} for i in range(length)]
    for before, step in zip(steps, steps[1:], strict=False):
        step["depends_on"] = [before["id"]]
    return {"name": name, "steps": steps}


def _fanout(name: str, width: int) -> dict:
    middle = [{"id": f"p{i:03d}", "kind": "noop", "depends_on": ["root"]} for i in range(width)]
    join = {"id": "join", "kind": "noop", "depends_on": [step["id"] for step in middle]}
    return {"name": name, "steps": [{"id": "root", "kind": "noop"}, *middle, join]}


def _step_count(workflow) -> int:
    return len(workflow.definition["steps"])


def _with_cluster(bench: Bench, shapes: list[str]) -> None:
    cluster = Child(["worker"], bench.env(), ready="trellis worker").start()
    sampler = MemorySampler(cluster).start()
    try:
        _warm_up(bench)
        for shape in shapes:
            bench.results[shape] = bench.repeat(shape, SHAPE_FUNCTIONS[shape])
    finally:
        sampler.stop()
        cluster.stop()
    bench.results["worker_memory"] = sampler.peak


def _warm_up(bench: Bench) -> None:
    """Imports, connections and plans in every worker, before anything is timed."""
    ids = [services.run_start(workflow=bench.workflows[key])[0].pk for key in ("chain", "fanout")]
    wait_for(ids)


def _with_server(bench: Bench) -> None:
    if "api" in bench.options.shapes and api_available():
        bench.results["api_seed"] = seed_runs(bench.workflows["list"], bench.options.size(10**6))
    port = free_port()
    server = Child(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        bench.env(),
        ready="Trellis on",
    ).start()
    try:
        _wait_http(port)
        if "memory" in bench.options.shapes:
            bench.results["memory"] = idle_memory(server, port)
        if "api" in bench.options.shapes:
            bench.results["api"] = _api(bench, port, server)
    finally:
        server.stop()
        cancel_open_runs()


def _api(bench: Bench, port: int, server: "Child") -> dict:
    if not api_available():
        return {"available": False, "reason": "/api/v1/runs is not routed in api/urls.py"}
    token = _api_token()
    # warm: imports and connections in every web worker
    shape_api(bench, port, token, server, seconds=1.0)
    figures = bench.repeat("api", shape_api, port, token, server)
    return {"available": True, "seeded_runs": bench.results["api_seed"]["runs"], **figures}


# --- the shapes --------------------------------------------------------------------------


def shape_chain(bench: Bench) -> dict:
    workflow = bench.workflows["chain"]
    seconds = timed(lambda: [services.run_start(workflow=workflow, trigger=Trigger.CLI)[0].pk])
    steps = _step_count(workflow)
    return {"steps": steps, "seconds": seconds, "per_step_ms": seconds * 1000 / steps}


def shape_fanout(bench: Bench) -> dict:
    workflow = bench.workflows["fanout"]
    seconds = timed(lambda: [services.run_start(workflow=workflow, trigger=Trigger.CLI)[0].pk])
    steps = _step_count(workflow)
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def shape_runs(bench: Bench) -> dict:
    workflow, count = bench.workflows["runs"], bench.options.size(100)
    seconds = timed(lambda: services.run_bulk_start(workflow=workflow, inputs=[{}] * count))
    return {"runs": count, "seconds": seconds, "runs_per_s": count / seconds}


def shape_latency(bench: Bench) -> dict:
    """Sequential one-step runs: trigger (before run_start) to the step's `running` event,
    and to the run's finished_at."""
    triggered, returned = {}, {}
    for _ in range(bench.options.size(50, 5)):
        at = timezone.now()
        run, _ = services.run_start(workflow=bench.workflows["single"], trigger=Trigger.CLI)
        triggered[run.pk], returned[run.pk] = at, timezone.now()
        wait_for([run.pk], poll=0.002)
    running = dict(
        RunEvent.objects.filter(
            run_id__in=triggered, type="step.status", status=StepStatus.RUNNING
        ).values_list("run_id", "created_at")
    )
    finished = dict(Run.objects.filter(pk__in=triggered).values_list("pk", "finished_at"))
    to_running = [_ms(running[pk] - at) for pk, at in triggered.items()]
    to_done = [_ms(finished[pk] - at) for pk, at in triggered.items()]
    start_call = [_ms(returned[pk] - at) for pk, at in triggered.items()]
    return {
        "runs": len(triggered),
        "run_start_p50_ms": percentile(start_call, 50),
        "run_start_p95_ms": percentile(start_call, 95),
        "to_running_p50_ms": percentile(to_running, 50),
        "to_running_p95_ms": percentile(to_running, 95),
        "to_succeeded_p50_ms": percentile(to_done, 50),
        "to_succeeded_p95_ms": percentile(to_done, 95),
    }


def shape_bulk(bench: Bench, size: int) -> dict:
    """run_bulk_start creating `size` queued runs (and admitting the first ones, as it does
    after commit); no worker runs, so this is creation only."""
    inputs = [{"n": n} for n in range(size)]
    with _admission_timer() as admission:
        started = time.perf_counter()
        services.run_bulk_start(workflow=bench.workflows["bulk"], inputs=inputs)
        seconds = time.perf_counter() - started
    cancel_open_runs()
    dispatch.broker().purge_queue()
    return {
        "runs": size,
        "seconds": seconds,
        "create_seconds": seconds - admission["seconds"],
        "admission_seconds": admission["seconds"],
    }


@contextmanager
def _admission_timer():
    spent = {"seconds": 0.0}

    def timing(function):
        def timed_call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - started

        return timed_call

    with (
        mock.patch.object(transitions, "admit_waiting", timing(transitions.admit_waiting)),
        mock.patch.object(services, "enqueue_steps", timing(services.enqueue_steps)),
    ):
        yield spent


def shape_api(bench: Bench, port: int, token: str, server, seconds: float | None = None) -> dict:
    """4 clients for a few seconds on the filtered first page of GET /runs, then on POST
    /runs (one-step runs, which the server's own workers run meanwhile), with the CPU
    each part of the system spent per request."""
    seconds = seconds or max(1.0, 5.0 * min(bench.options.scale, 1.0))
    path = f"/api/v1/runs?status=failed&workflow={bench.workflows['list'].name}"
    body = json.dumps({"workflow": bench.workflows["single"].name, "input": {}})
    listing = http_load(port, token, "GET", path, None, seconds, server)
    posting = http_load(port, token, "POST", "/api/v1/runs", body, seconds, server)
    # The server's workers run what was posted; let them finish before the next repeat.
    wait_for(list(Run.objects.exclude(status__in=RUN_TERMINAL).values_list("pk", flat=True)))
    return {
        **{f"list_{key}": value for key, value in listing.items()},
        **{f"post_{key}": value for key, value in posting.items()},
    }


SHAPE_FUNCTIONS = {
    "chain": shape_chain,
    "fanout": shape_fanout,
    "runs": shape_runs,
    "latency": shape_latency,
}


# --- queries per transition ------------------------------------------------------------


def count_queries(bench: Bench) -> dict:
    """SQL statements per transition, counted in this process (no worker running): a run
    started, then driven by the worker's own task function, as a django-q2 worker would."""
    result = {}
    name = bench.workflows["runs"].name
    # The first start of a version reads its definition; that run is cancelled, so the
    # task below drives only the counted one.
    warm, _ = services.run_start(workflow=name)
    services.run_cancel(run_id=warm.pk, grace_seconds=0)
    with CaptureQueriesContext(connection) as queries:  # by name, as the API starts runs
        run, _ = services.run_start(workflow=name)
    result["run_start"] = round_trips(queries.captured_queries)
    result["chain"] = queries_of_task(run)
    run, _ = services.run_start(workflow=bench.workflows["fanout"])
    result["fanout"] = queries_of_task(run)
    with CaptureQueriesContext(connection) as queries:
        services.run_bulk_start(workflow=bench.workflows["bulk"], inputs=[{}] * 100)
    result["run_bulk_start_100"] = round_trips(queries.captured_queries)
    cancel_open_runs()
    dispatch.broker().purge_queue()
    log(f"queries: {result}")
    return result


def round_trips(queries, start: int = 0) -> int:
    """The statements logged from `start` on, but for PREPAREs: those are sent once per
    connection and statement (runs.engine.sql.sendable), not per transition."""
    return sum(1 for query in itertools.islice(queries, start, None) if not _is_prepare(query))


def _is_prepare(query: dict) -> bool:
    return query["sql"].startswith("PREPARE ")


def queries_of_task(run) -> dict:
    """Run every step of `run` with worker.execute_step, counting the statements of each
    engine call it makes (claim, execute, finish, enqueue) by wrapping them."""
    counts: dict[str, list[int]] = {}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            before = len(connection.queries_log)
            try:
                return function(*args, **kwargs)
            finally:
                counts.setdefault(name, []).append(round_trips(connection.queries_log, before))

        return wrapper

    names = ("step_claim", "steps_finish", "step_finish", "renew_leases")
    targets = [(transitions, name) for name in names if hasattr(transitions, name)]
    targets += [(executors, "execute"), (engine_worker, "enqueue_steps")]
    steps, total, tasks = StepRun.objects.filter(run=run).count(), 0, 0
    with contextlib.ExitStack() as stack, CaptureQueriesContext(connection):
        for module, name in targets:
            stack.enter_context(
                mock.patch.object(module, name, counting(name, getattr(module, name)))
            )
        while Run.objects.filter(pk=run.pk).exclude(status__in=RUN_TERMINAL).exists():
            before = len(connection.queries_log)
            engine_worker.execute_step(None, run.pk)
            total, tasks = total + round_trips(connection.queries_log, before), tasks + 1
    figures = {
        "steps": steps,
        "tasks": tasks,
        "queries": total,
        "per_step": round(total / steps, 2),
    }
    for name, values in counts.items():
        figures[name] = {"calls": len(values), "queries": sum(values)}
    return figures


# --- waiting and figures -----------------------------------------------------------------


def timed(start) -> float:
    """Seconds from just before `start()` to the last of its runs finishing (finished_at)."""
    began = timezone.now()
    run_ids = start()
    wait_for(run_ids)
    end = Run.objects.filter(pk__in=run_ids).aggregate(end=Max("finished_at"))["end"]
    return (end - began).total_seconds()


def wait_for(run_ids: list[str], timeout: float = RUN_TIMEOUT, poll: float = 0.01) -> None:
    """Until every run is terminal; a run that did not succeed makes the figures void."""
    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending:
        done = Run.objects.filter(pk__in=pending, status__in=RUN_TERMINAL)
        pending -= set(done.values_list("pk", flat=True))
        if pending and time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} runs still unfinished after {timeout:.0f} s")
        if pending:
            time.sleep(poll)
    failed = Run.objects.filter(pk__in=run_ids).exclude(status=RunStatus.SUCCEEDED).first()
    if failed is not None:
        raise BenchError(f"run {failed.pk} ended {failed.status}: {failed.error}")


def cancel_open_runs() -> None:
    """Close whatever the bench left open (bulk runs, API runs): plain UPDATEs, no events —
    bench data in a throwaway database, so the next shape starts from the same state."""
    now = timezone.now()
    open_runs = Run.objects.exclude(status__in=RUN_TERMINAL)
    StepRun.objects.filter(run__in=open_runs).exclude(status__in=STEP_TERMINAL).update(
        status=StepStatus.CANCELLED, finished_at=now, lease_expires_at=None
    )
    open_runs.update(status=RunStatus.CANCELLED, finished_at=now, reason="cancelled")


def speed_reference_ms(tries: int = 3) -> float:
    """How fast this machine runs Python right now: the best of `tries` timings of a fixed
    CPU-bound piece of work (about 10 ms on the machine the targets are set for), taken
    before each repeat. On a shared virtual machine the same code's figures can drift by
    half within an hour; a reference that drifted too tells the machine from the code."""
    best = math.inf
    for _ in range(tries):
        started = time.process_time()
        table = {str(number): number for number in range(20_000)}
        json.loads(json.dumps(table))
        best = min(best, time.process_time() - started)
    return round(best * 1000, 2)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


def median_of(figures: list[dict]) -> dict:
    """The median of each figure over the repeats, the repeats kept under `repeats`."""
    merged = {}
    for key, value in figures[0].items():
        values = [figure[key] for figure in figures]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        merged[key] = _round(statistics.median(values)) if numeric else value
    if len(figures) > 1:
        merged["repeats"] = [{k: _round(v) for k, v in figure.items()} for figure in figures]
    return merged


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def _round(value):
    return round(value, 3) if isinstance(value, float) else value


def _brief(figure: dict) -> str:
    return ", ".join(f"{k} {_round(v)}" for k, v in figure.items() if not isinstance(v, list))


# --- child processes and memory --------------------------------------------------------


class Child:
    """A `trellis` subcommand in its own process group; its output is drained (the last
    lines kept for error messages) so a chatty child never blocks on a full pipe."""

    def __init__(self, args: list[str], env: dict, ready: str):
        self.args, self.env, self.ready = args, env, ready
        self.lines: deque[str] = deque(maxlen=100)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Child":
        seen = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.cli", *self.args],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def drain():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if self.ready in line:
                    seen.set()
            seen.set()  # ended: start() must not wait for nothing

        threading.Thread(target=drain, daemon=True).start()
        if not seen.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise BenchError(f"`trellis {' '.join(self.args)}` did not start: {self.output()}")
        return self

    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> list[int]:
        return procfs.process_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group


def _proc_kib(path: str, key: str) -> int:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_of(pids: list[int], detail: bool = False) -> dict:
    """RSS counts pages shared by forked processes once per process; PSS shares them out,
    so the PSS sum is what the processes really take."""
    rows = [
        (
            pid,
            _proc_kib(f"/proc/{pid}/status", "VmRSS:") / 1024,
            _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024,
        )
        for pid in pids
    ]
    memory = {
        "processes": len(rows),
        "rss_mib": round(sum(row[1] for row in rows), 1),
        "pss_mib": round(sum(row[2] for row in rows), 1),
        "largest_rss_mib": round(max((row[1] for row in rows), default=0), 1),
    }
    if detail:
        memory["by_process"] = [
            {"command": _command(pid), "rss_mib": round(rss, 1), "pss_mib": round(pss, 1)}
            for pid, rss, pss in rows
        ]
    return memory


def _argv(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return None


def _command(pid: int) -> str:
    """A short name for a process, for the memory table."""
    argv = _argv(pid)
    if argv is None:
        return "?"
    return " ".join(os.path.basename(arg) if "/" in arg else arg for arg in argv[:5])[:80]


class MemorySampler:
    """Peak memory of a child's process tree while the shapes run."""

    def __init__(self, child: Child, interval: float = 1.0):
        self.child, self.interval = child, interval
        self.peak = {"processes": 0, "rss_mib": 0.0, "pss_mib": 0.0, "largest_rss_mib": 0.0}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> "MemorySampler":
        self.thread.start()
        return self

    def _sample(self) -> None:
        while True:
            now = memory_of(self.child.pids())
            self.peak = {key: max(self.peak[key], now[key]) for key in self.peak}
            if self.done.wait(self.interval):
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def idle_memory(server: Child, port: int) -> dict:
    """`trellis serve` (uWSGI web workers + a cluster) after a few requests, then idle."""
    for _ in range(20):
        _get(port, "/api/v1/health")
    time.sleep(3)
    samples = []
    for _ in range(8):
        samples.append(memory_of(server.pids(), detail=True))
        time.sleep(0.25)
    memory = max(samples, key=lambda sample: sample["pss_mib"])
    log(f"idle memory: {memory['pss_mib']} MiB PSS, {memory['rss_mib']} MiB RSS")
    return {**memory, "workers": server.env["TRELLIS_WORKERS"]}


# --- HTTP ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_http(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError):
            if _get(port, "/api/v1/health") == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"the web server did not answer on port {port} within {timeout:.0f} s")


def _api_token() -> str:
    from django.contrib.auth.models import User

    from api.models import ApiToken

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    return ApiToken.issue(user=user, scopes=["read", "run", "admin"], name="bench")[1]


def http_load(port, token, method, path, body, seconds, server, clients=4) -> dict:
    """`clients` processes, each one keep-alive connection sending requests back to back."""
    connections.close_all()  # the forked clients never touch the database
    before = cpu_seconds(server)
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        parts = pool.starmap(_client, [(port, token, method, path, body, seconds)] * clients)
    spent = {part: cpu - before.get(part, 0.0) for part, cpu in cpu_seconds(server).items()}
    latencies = [ms for part in parts for ms in part["latencies"]]
    elapsed = max(part["elapsed"] for part in parts)
    errors = [error for part in parts for error in part["errors"]]
    if not latencies:
        raise BenchError(f"{method} {path}: no request answered ({errors[:1]})")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "cpu_ms_per_request": {
            part: round(cpu * 1000 / len(latencies), 3) for part, cpu in sorted(spent.items())
        },
    }


def cpu_seconds(server) -> dict[str, float]:
    """CPU seconds spent so far by each part: the server's web workers and its worker
    cluster, the database server's backends for the bench database (PostgreSQL), Redis,
    and the HTTP clients (this process's reaped children)."""
    database = connection.settings_dict["NAME"] if connection.vendor == "postgresql" else None
    spent: dict[str, float] = {}

    def add(part: str | None, pid: int) -> None:
        if part:
            spent[part] = spent.get(part, 0.0) + procfs.cpu_seconds(pid)

    for pid in server.pids():
        command = _command_line(pid)
        add("web" if "uwsgi" in command else "workers" if " worker" in command else None, pid)
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        command = _command_line(pid)
        if database and command.startswith("postgres:") and f" {database} " in command:
            add("database", pid)
        elif command.startswith("redis-server"):
            add("redis", pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent["clients"] = children.ru_utime + children.ru_stime
    return spent


def _command_line(pid: int) -> str:
    return " ".join(_argv(pid) or [])


def _client(port, token, method, path, body, seconds) -> dict:
    """One keep-alive HTTP/1.1 connection sending the same prepared request back to back,
    reading each response by its Content-Length: as little client work per request as
    `wrk` would do, so that the clients take as little as possible of the cores the
    server runs on (http.client spent about 0.3 ms of CPU per request on parsing)."""
    payload = body.encode() if body else b""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Token {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    connection = _RawConnection(port)
    latencies, errors = [], []
    began = time.perf_counter()
    while (started := time.perf_counter()) - began < seconds:
        try:
            status, text = connection.exchange(request)
        except OSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            connection.close()
            connection = _RawConnection(port)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if status >= 400:
            errors.append(f"{status}: {text[:200].decode(errors='replace')}")
        if connection.closing:
            connection.close()
            connection = _RawConnection(port)
    connection.close()
    return {"latencies": latencies, "errors": errors, "elapsed": time.perf_counter() - began}


class _RawConnection:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.closing = False

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, return (status, body) of its response."""
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        head, self.buffer = self.buffer[:end].lower(), self.buffer[end + 4 :]
        status = int(head[9:12])
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            raise ConnectionError(f"a {status} response without Content-Length")
        stop = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : stop if stop >= 0 else None])
        while len(self.buffer) < length:
            self._receive()
        text, self.buffer = self.buffer[:length], self.buffer[length:]
        self.closing = b"\r\nconnection: close" in head
        return status, text

    def _receive(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


# --- a million runs, by SQL ----------------------------------------------------------------


def seed_runs(workflow, count: int, settle: bool = True) -> dict:
    """`count` finished runs of `workflow` in one INSERT … SELECT (1 in 10 failed), created
    over the past weeks, every other column of runs_run filled from its model default.
    `settle`: then vacuum (PostgreSQL) and analyze the table, which a test's transaction
    cannot do."""
    started = time.perf_counter()
    version = workflow.current_version
    base = timezone.now() - timedelta(seconds=2 * count + 60)
    exprs = _seed_expressions(connection.vendor, base)
    values = {
        "workflow_id": workflow.pk,
        "version_id": version.pk,
        "dag_hash": version.dag_hash,
        "trigger": Trigger.API.value,
        "event_seq": 0,
    }
    columns, selects, params = [], [], []
    for model_field in Run._meta.concrete_fields:
        columns.append(connection.ops.quote_name(model_field.column))
        sql, sql_params = exprs.get(model_field.column, ("%s", None))
        if sql_params is None:
            value = values.get(model_field.column, model_field.get_default())
            sql_params = [model_field.get_db_prep_save(value, connection)]
        selects.append(sql)
        params.extend(sql_params)
    insert = f"INSERT INTO {Run._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(selects)}"
    if connection.vendor == "postgresql":
        sql, params = f"{insert} FROM generate_series(1, %s) AS g(i)", [*params, count]
    else:
        rows = "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %s)"
        sql, params = f"{rows} {insert} FROM g", [count, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if not settle:
            return {"runs": count, "seconds": round(time.perf_counter() - started, 2)}
        # A table that has been in use: planner statistics, and on PostgreSQL the vacuum
        # its autovacuum would otherwise start in the middle of the measurement.
        verb = "VACUUM (ANALYZE)" if connection.vendor == "postgresql" else "ANALYZE"
        cursor.execute(f"{verb} {Run._meta.db_table}")
    seconds = time.perf_counter() - started
    log(f"seeded {count} runs in {seconds:.1f} s")
    return {"runs": count, "seconds": round(seconds, 2)}


def _seed_expressions(vendor: str, base) -> dict:
    """(SQL, params) per column, in terms of the row number `i`."""
    epoch_ms = int(base.timestamp() * 1000)
    if vendor == "postgresql":
        created = ("(%s::timestamptz + make_interval(secs => i * 2))", [base])
        ident = "lpad(to_hex(%s::bigint + i * 2000), 12, '0') || substr(md5(i::text), 1, 20)"
    else:
        stamp = base.strftime("%Y-%m-%d %H:%M:%S")
        created = ("strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '+' || (i * 2) || ' seconds')", [stamp])
        ident = "printf('%%012x', %s + i * 2000) || lower(hex(randomblob(10)))"
    return {
        "id": (ident, [epoch_ms]),
        "status": ("CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'succeeded' END", []),
        "created_at": created,
        "started_at": created,
        "finished_at": created,
        "duration_ms": ("2000", []),
    }


# --- the report ----------------------------------------------------------------------------


def report(bench: Bench) -> dict:
    results = bench.results
    return {
        "trellis": settings.VERSION,
        "database": connection.vendor,
        "broker": "redis" if settings.REDIS_URL else "orm",
        "workers": bench.options.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "repeat": bench.options.repeat,
        "scale": bench.options.scale,
        "speed_reference_ms": _spread(bench.references),
        "results": results,
        "targets": [_target_row(results, *target) for target in TARGETS],
    }


def _spread(values: list[float]) -> dict:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _lookup(results: dict, path: str):
    value = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _target_row(results: dict, path: str, comparison: str, target: float, what: str) -> dict:
    value = _lookup(results, path)
    row = {"figure": path, "what": what, "target": f"{comparison} {target}", "value": value}
    if isinstance(value, int | float) and value > 0:
        ratio = target / value if comparison == "<=" else value / target
        row.update(ratio=round(ratio, 3), met=ratio >= 1)
    return row


def render(result: dict) -> str:
    """A human table of the targets and the figures behind them."""
    lines = [
        f"trellis bench: {result['database']} + {result['broker']} broker, "
        f"{result['workers']} workers, {result['cpus']} CPUs, median of {result['repeat']}",
        "",
        f"{'what':44} {'target':>10} {'figure':>12} {'ratio':>7}",
    ]
    for row in result["targets"]:
        value = row["value"]
        shown = "-" if value is None else f"{value:,.2f}"
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        mark = "" if "met" not in row else ("  ok" if row["met"] else "  MISSED")
        lines.append(f"{row['what']:44} {row['target']:>10} {shown:>12} {ratio:>7}{mark}")
    lines += ["", "ratio >= 1 meets the target"]
    if reference := result.get("speed_reference_ms"):
        lines.append(
            f"speed reference (a fixed piece of Python work, lower is faster): median "
            f"{reference['median']:.1f} ms, {reference['min']:.1f}-{reference['max']:.1f} "
            "across the repeats; compare runs only where these are close"
        )
    load = result["results"]["load_average"]
    if load["before"] > 0.5:
        lines.append(f"note: the machine was busy (load average {load['before']:.2f}) at the start")
    lines += ["", json.dumps(result["results"], indent=2)]
    return "\n".join(lines)
