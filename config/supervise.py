"""Run the web server and the workers as children and stop them together.

Plain Python on purpose: `trellis serve` replaces itself with this module, so the
process that only watches its children does not hold a loaded Django in memory.
Usage: python -m config.supervise <host> <port> <web-workers> <with-worker: 0|1>
"""

import os
import signal
import subprocess
import sys
import threading
import time

STOP_SECONDS = 15


def web_command(host: str, port: str, web_workers: str) -> list[str]:
    """uWSGI: HTTP parsed in C with keep-alive, the app loaded once in the master and the
    workers forked from it (config/wsgi.py), each with 4 threads. Against gunicorn's
    threaded workers it spent about a third less CPU per request (docs/PERFORMANCE.md)."""
    bin_dir = os.path.dirname(sys.executable)
    access_log = '%(addr) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) %(msecs)ms'
    return [
        os.path.join(bin_dir, "uwsgi"), "--strict", "--module", "config.wsgi:application",
        "--http11-socket", f"{host}:{port}", "--listen", str(_backlog()),
        "--master", "--processes", web_workers, "--threads", "4", "--enable-threads",
        "--thunder-lock", "--single-interpreter", "--need-app", "--die-on-term",
        "--buffer-size", "65535",  # the largest header block accepted
        "--harakiri", "60",  # a request still running after 60 s gets its worker replaced
        "--worker-reload-mercy", "5", "--ignore-sigpipe", "--ignore-write-errors",
        "--disable-write-exception", "--log-format", access_log,
        # No --post-buffering: the application sees the headers first, so a body over
        # TRELLIS_MAX_BODY_BYTES is refused (413) before it is read, not after.
    ]  # fmt: skip


def start_web(command: list[str]) -> tuple[subprocess.Popen, threading.Thread]:
    web = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    relay = threading.Thread(target=relay_after_banner, args=(web.stdout,), daemon=True)
    relay.start()
    return web, relay


def relay_after_banner(lines) -> None:
    """Pass the web server's output on from its workers' start: its start-up banner (build
    options, warnings meant for other setups) is held back, and printed only if it stops
    before any worker started, when it says why."""
    banner: list[str] | None = []
    for line in lines:
        if line.startswith("spawned uWSGI worker"):
            banner = None
        elif banner is not None:
            banner.append(line)
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    if banner:
        sys.stderr.write("".join(banner))


def _backlog() -> int:
    """Connections waiting to be accepted: 1,024, or what the kernel allows if less
    (uWSGI refuses to start above it)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as limit:
            return min(1024, int(limit.read()))
    except (OSError, ValueError):
        return 128


def main(host: str, port: str, web_workers: str, with_worker: str) -> int:
    web, relay = start_web(web_command(host, port, web_workers))
    children = [web]
    if with_worker == "1":
        worker = [sys.executable, "-m", "config.cli", "worker"]
        # Its own process group, so the cluster's children can be killed with it.
        children.append(subprocess.Popen(worker, start_new_session=True))
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                child.kill()
    relay.join(timeout=1)
    print("Trellis stopped", flush=True)
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stopping else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
