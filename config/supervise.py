"""Run the web server and the workers as children and stop them together.

Plain Python on purpose: `trellis serve` replaces itself with this module, so the
process that only watches its children does not hold a loaded Django in memory.
Usage: python -m config.supervise <host> <port> <web-workers> <with-worker: 0|1>
"""

import os
import signal
import subprocess
import sys
import time

STOP_SECONDS = 15


def web_command(host: str, port: str, web_workers: str) -> list[str]:
    bin_dir = os.path.dirname(sys.executable)
    return [
        os.path.join(bin_dir, "gunicorn"), "config.wsgi:application",
        "--bind", f"{host}:{port}", "--workers", web_workers, "--threads", "4",
        "--worker-class", "gthread", "--preload", "--access-logfile", "-",
        "--log-level", "warning", "--graceful-timeout", "5", "--timeout", "60",
    ]  # fmt: skip


def main(host: str, port: str, web_workers: str, with_worker: str) -> int:
    children = [subprocess.Popen(web_command(host, port, web_workers))]
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
    print("Trellis stopped", flush=True)
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stopping else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
