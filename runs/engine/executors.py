"""Run one attempt of a step: shell, python, http, noop, respond.

Executors return an Outcome and never raise for a step's own failure. While a step runs,
its lease is renewed; a failed renewal means the step was cancelled or reaped, and the
step's process group is terminated (SIGTERM, then SIGKILL after the grace period).
"""

import codecs
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils.module_loading import import_string

from runs.engine import templates
from runs.engine.plan import plan_for
from runs.engine.transitions import Outcome, step_renew_lease
from runs.models import LogChunk, Run, StepOutput, StepRun
from runs.status import FailureReason

HIDDEN_ENV = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


class LogWriter:
    """Buffers a step's stdout/stderr and appends them to the database in batches."""

    def __init__(self, step: StepRun):
        self.step = step
        self.lock = threading.Lock()
        self.buffers: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.offsets = {"stdout": 0, "stderr": 0}
        self.limit = settings.TRELLIS["MAX_LOG_BYTES"]
        self.truncated = False

    def write(self, stream: str, text: str) -> None:
        if not text:
            return
        with self.lock:
            self.buffers[stream].append(text)

    def flush(self) -> None:
        with self.lock:
            pending = {s: "".join(parts) for s, parts in self.buffers.items() if parts}
            self.buffers = {"stdout": [], "stderr": []}
        chunks = []
        for stream, text in pending.items():
            text = storable_text(text)
            size = len(text.encode())
            if self.offsets[stream] + size > self.limit:
                if self.truncated:
                    continue
                self.truncated = True
                text = f"\n[log truncated at {self.limit} bytes]\n"
                size = len(text.encode())
            chunks.append(
                LogChunk(
                    step_run_id=self.step.pk,
                    attempt=self.step.attempt,
                    stream=stream,
                    offset=self.offsets[stream],
                    text=text,
                )
            )
            self.offsets[stream] += size
        if chunks:
            LogChunk.objects.bulk_create(chunks)


def step_context(step: StepRun, spec: dict) -> dict:
    run: Run = step.run
    plan = plan_for(run)
    definition = plan.definition
    context = {
        "input": run.input,
        "params": {**(definition.get("params") or {}), **(run.params or {})},
        "run": {
            "id": run.pk,
            "workflow": definition["name"],
            "trigger": run.trigger,
            "logical_date": run.logical_date.isoformat() if run.logical_date else None,
            "attempt": step.attempt,
        },
        "step": {"id": step.step_id, "attempt": step.attempt},
        "steps": {},
    }
    if (step.kind == "python" or "steps." in json.dumps(spec)) and (
        upstream := plan.upstream(step.step_id)
    ):
        # Upstream steps only: a sibling's outputs, there or not depending on timing,
        # must never be visible.
        rows = StepOutput.objects.filter(
            run_id=run.pk, step_run__step_id__in=sorted(upstream)
        ).values_list("step_run__step_id", "key", "value")
        for step_id, key, value in rows:
            context["steps"].setdefault(step_id, {"outputs": {}})["outputs"][key] = value
    return context


def execute(step: StepRun, spec: dict) -> Outcome:
    executor = EXECUTORS.get(step.kind)
    if executor is None:
        return Outcome(ok=False, reason=FailureReason.ERROR, error=f"unknown kind {step.kind}")
    writer = LogWriter(step)
    try:
        context = step_context(step, spec)
        outcome = executor(step, spec, context, writer)
        outcome.error = storable_text(outcome.error)
        return outcome
    except Exception as exc:  # a bug or a bad template must fail the step, not the worker
        writer.write("stderr", traceback.format_exc())
        return Outcome(ok=False, reason=FailureReason.ERROR, error=f"{type(exc).__name__}: {exc}")
    finally:
        writer.flush()


def run_noop(step, spec, context, writer) -> Outcome:
    return Outcome(ok=True)


def run_respond(step, spec, context, writer) -> Outcome:
    outputs = {
        "status": templates.render(spec.get("status", 200), context),
        "headers": templates.render(spec.get("headers", {}), context),
        "body": templates.render(spec.get("body"), context),
    }
    return Outcome(ok=True, outputs=outputs)


# --- shell -------------------------------------------------------------------------------


def shell_command(spec: dict, context: dict) -> tuple[list[str], dict[str, str]]:
    """argv items are rendered one by one; a string runs under /bin/sh -c with template
    values passed only as environment variables."""
    command = spec["command"]
    if isinstance(command, list):
        return [templates.render_text(item, context) for item in command], {}
    script, env = templates.shell_script(command, context)
    return ["/bin/sh", "-c", script], env


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV}


def run_shell(step, spec, context, writer) -> Outcome:
    argv, arg_env = shell_command(spec, context)
    workdir = tempfile.mkdtemp(prefix=f"trellis-{step.run_id}-{step.step_id}-")
    output_file = os.path.join(workdir, "outputs")
    env = _base_env()
    env.update({k: templates.render_text(v, context) for k, v in (spec.get("env") or {}).items()})
    env.update(arg_env)
    env.update(
        TRELLIS_OUTPUT=output_file,
        TRELLIS_RUN_ID=step.run_id,
        TRELLIS_STEP_ID=step.step_id,
        TRELLIS_ATTEMPT=str(step.attempt),
        TRELLIS_WORKFLOW=context["run"]["workflow"],
    )
    cwd = templates.render_text(spec["workdir"], context) if spec.get("workdir") else workdir
    try:
        return _supervise(step, spec, argv, env, cwd, output_file, writer)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(step, spec, argv, env, cwd, output_file, writer) -> Outcome:
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        writer.write("stderr", f"cannot start {argv[0]!r}: {exc.strerror}\n")
        return Outcome(
            ok=False, reason=FailureReason.ERROR, error=f"cannot start {argv[0]!r}: {exc.strerror}"
        )
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", writer), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", writer), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        stopped_by = _watch(step, spec, process, writer)
    except BaseException:
        _terminate(process, 0)  # never leave the process running behind a failed watch
        raise
    for reader in readers:
        reader.join(timeout=2)
    _kill_group(process.pid, signal.SIGKILL)  # leftovers that kept the pipes open
    if stopped_by == "cancelled":
        return Outcome(
            ok=False,
            reason=FailureReason.CANCELLED,
            error="cancelled",
            exit_code=process.returncode,
            retryable=False,
        )
    if stopped_by == "timeout":
        return Outcome(
            ok=False,
            reason=FailureReason.TIMEOUT,
            error=f"timed out after {spec['timeout']} s",
            exit_code=process.returncode,
        )
    if process.returncode != 0:
        return Outcome(
            ok=False,
            reason=FailureReason.EXIT_CODE,
            error=f"exit code {process.returncode}",
            exit_code=process.returncode,
        )
    outputs, error = clean_outputs(read_output_file(output_file))
    if error:
        return Outcome(ok=False, reason=FailureReason.ERROR, error=error, exit_code=0)
    return Outcome(ok=True, outputs=outputs, exit_code=0)


def _watch(step, spec, process, writer) -> str:
    """Wait for the process; stream logs, renew the lease, enforce timeout and cancel."""
    flush_every = settings.TRELLIS["LOG_FLUSH_SECONDS"]
    renew_every = min(settings.TRELLIS["LEASE_SECONDS"] / 3, 1.0)
    deadline = time.monotonic() + spec["timeout"] if spec.get("timeout") else None
    next_flush = next_renew = time.monotonic()
    while True:
        try:
            process.wait(timeout=0.05)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= next_flush:
            writer.flush()
            next_flush = now + flush_every
        if now >= next_renew:
            next_renew = now + renew_every
            if not _renew_or_blip(step):
                _terminate(process, _cancel_grace(step))
                return "cancelled"
        if deadline and now >= deadline:
            _terminate(process, min(_cancel_grace(step), 5.0))
            return "timeout"


def _renew_or_blip(step: StepRun) -> bool:
    """Renew the lease; a database error is a blip (the lease still has time), not a
    cancel."""
    try:
        return step_renew_lease(step)
    except DatabaseError:
        close_old_connections()
        return True


def _cancel_grace(step: StepRun) -> float:
    grace = (
        Run.objects.filter(pk=step.run_id).values_list("cancel_grace_seconds", flat=True).first()
    )
    return settings.TRELLIS["CANCEL_GRACE_SECONDS"] if grace is None else grace


def _terminate(process: subprocess.Popen, grace: float) -> None:
    _kill_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(grace, 0))
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _pump(pipe, stream: str, writer: LogWriter) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = pipe.fileno()
    while True:
        data = os.read(fd, 65536)
        if not data:
            writer.write(stream, decoder.decode(b"", final=True))
            pipe.close()
            return
        writer.write(stream, decoder.decode(data))


def read_output_file(path: str) -> dict:
    """`key=value` lines; later lines win; blank lines and lines without '=' are ignored."""
    outputs: dict = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle.read(MAX_OUTPUT_BYTES + 1).splitlines(keepends=True):
                key, sep, value = line.rstrip("\n").partition("=")
                if sep and key.strip():
                    outputs[key.strip()] = value
    except FileNotFoundError:
        pass
    return outputs


# --- python ------------------------------------------------------------------------------


class StepContext(dict):
    """What a python step receives: a dict that also reads as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def log(self, message: str) -> None:
        self["_writer"].write("stdout", f"{message}\n")


class _StreamToLog(io.TextIOBase):
    def __init__(self, writer: LogWriter, stream: str):
        self.writer, self.stream = writer, stream

    def write(self, text: str) -> int:
        self.writer.write(self.stream, text)
        return len(text)


class StepTimeout(BaseException):
    """BaseException, so a step's own `except Exception:` cannot swallow its timeout."""


@contextlib.contextmanager
def _alarm(seconds: float | None):
    """Raise StepTimeout in the main thread after `seconds`, restoring any outer alarm
    (django-q2 uses SIGALRM for its own task timeout)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise StepTimeout()

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            remaining = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))


class _Heartbeat(threading.Thread):
    """Renews the lease of an in-process step from a side thread."""

    def __init__(self, step: StepRun):
        super().__init__(daemon=True)
        self.step, self.stop = step, threading.Event()
        self.lost = False

    def run(self) -> None:
        interval = min(settings.TRELLIS["LEASE_SECONDS"] / 3, 5.0)
        try:
            while not self.stop.wait(interval):
                try:
                    if not step_renew_lease(self.step):
                        self.lost = True
                        return
                except DatabaseError:  # a blip: the lease has time left, try again
                    close_old_connections()
        finally:
            connection.close()


def run_python(step, spec, context, writer) -> Outcome:
    func = import_string(spec["callable"])
    ctx = StepContext(context, _writer=writer)
    heartbeat = _Heartbeat(step)
    heartbeat.start()
    try:
        with (
            _alarm(spec.get("timeout")),
            contextlib.redirect_stdout(_StreamToLog(writer, "stdout")),
            contextlib.redirect_stderr(_StreamToLog(writer, "stderr")),
        ):
            result = func(ctx)
    except StepTimeout:
        return Outcome(
            ok=False, reason=FailureReason.TIMEOUT, error=f"timed out after {spec['timeout']} s"
        )
    except Exception as exc:
        writer.write("stderr", traceback.format_exc())
        return Outcome(ok=False, reason=FailureReason.ERROR, error=f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop.set()
        close_old_connections()
    return _python_outcome(result)


MAX_OUTPUT_BYTES = 16 * 1024 * 1024


def clean_outputs(outputs: dict) -> tuple[dict | None, str]:
    """JSON-safe outputs without NUL characters (PostgreSQL cannot store them), or an error."""
    try:
        text = json.dumps(outputs, default=str, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"outputs are not JSON: {exc}"
    if len(text) > MAX_OUTPUT_BYTES:
        return None, f"outputs are {len(text)} bytes; the limit is {MAX_OUTPUT_BYTES}"
    return _storable(json.loads(text)), ""


def storable_text(text: str) -> str:
    """Text both databases accept: NUL (PostgreSQL refuses it) and unpaired surrogates
    (not valid Unicode, so not encodable) become U+FFFD."""
    return UNSTORABLE_RE.sub("\ufffd", text)


def _storable(value):
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _python_outcome(result) -> Outcome:
    if result is None:
        result = {}
    if isinstance(result, list):
        result = {"records": result}
    if not isinstance(result, dict):
        return Outcome(
            ok=False,
            reason=FailureReason.ERROR,
            error=f"a python step must return a dict or a list, not {type(result).__name__}",
        )
    outputs, error = clean_outputs(result)
    if error:
        return Outcome(ok=False, reason=FailureReason.ERROR, error=error)
    row_count = next((len(v) for v in outputs.values() if isinstance(v, list)), None)
    return Outcome(ok=True, outputs=outputs, row_count=row_count)


# --- http --------------------------------------------------------------------------------


def run_http(step, spec, context, writer) -> Outcome:
    heartbeat = _Heartbeat(step)  # a slow endpoint must not look like a dead worker
    heartbeat.start()
    try:
        return _request(step, spec, context, writer)
    finally:
        heartbeat.stop.set()


def _request(step, spec, context, writer) -> Outcome:
    method = str(spec.get("method", "GET")).upper()
    url = templates.render_text(spec["url"], context)
    if not url.startswith(("http://", "https://")):
        return Outcome(ok=False, reason=FailureReason.ERROR, error=f"not an http(s) url: {url!r}")
    headers = {k: templates.render_text(v, context) for k, v in (spec.get("headers") or {}).items()}
    body = None
    if "json" in spec:
        body = json.dumps(templates.render(spec["json"], context)).encode()
        headers.setdefault("Content-Type", "application/json")
    elif "body" in spec:
        body = templates.render_text(spec["body"], context).encode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    writer.write("stdout", f"{method} {url}\n")
    try:
        with _alarm(spec.get("timeout")):
            response = urllib.request.urlopen(request, timeout=spec.get("timeout", 30))
            status, raw, response_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, response_headers = exc.code, exc.read(), dict(exc.headers)
    except StepTimeout:
        return Outcome(
            ok=False, reason=FailureReason.TIMEOUT, error=f"timed out after {spec['timeout']} s"
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        writer.write("stderr", f"{exc}\n")
        return Outcome(ok=False, reason=FailureReason.ERROR, error=f"request failed: {exc}")
    text = raw.decode("utf-8", errors="replace")
    writer.write("stdout", f"-> {status}\n")
    outputs = {"status": status, "headers": response_headers}
    try:
        outputs["json"] = json.loads(text)
    except ValueError:
        outputs["text"] = text
    outputs, error = clean_outputs(outputs)
    if error:
        return Outcome(ok=False, reason=FailureReason.ERROR, error=error)
    expected = spec.get("expect_status")
    expected = expected if isinstance(expected, list) else [expected] if expected else None
    ok = status in expected if expected else 200 <= status < 300
    if not ok:
        return Outcome(
            ok=False, reason=FailureReason.ERROR, error=f"HTTP {status}", outputs=outputs
        )
    return Outcome(ok=True, outputs=outputs)


EXECUTORS = {
    "noop": run_noop,
    "shell": run_shell,
    "python": run_python,
    "http": run_http,
    "respond": run_respond,
}
