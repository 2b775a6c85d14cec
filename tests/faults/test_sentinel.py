"""The django-q2 sentinel of a `trellis worker` killed, and SIGTERM sent to every process
of the worker at once (`pkill -f`, systemd's default KillMode)."""

import os
import signal
import subprocess
import time

import pytest

from runs import services
from runs.models import Run
from runs.procfs import alive, parent_pid, process_tree
from runs.status import RunStatus
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ONE_STEP = """
name: sentinel-check
steps:
  - {id: only, kind: noop}
"""
HELD = """
name: sentinel-held
steps:
  - {id: hold, kind: shell, command: ["sleep", "61.25"]}
"""


def sentinel_of(cluster) -> int:
    """The cluster's sentinel: the one child of the `trellis worker` process."""
    tree = process_tree(cluster.proc.pid)
    children = [pid for pid in tree if parent_pid(pid) == cluster.proc.pid]
    assert len(children) == 1, children
    return children[0]


def commands(argv: list[str]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if cmdline.read().split(b"\0")[:-1] == [a.encode() for a in argv]:
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if alive(pid)]


def test_a_killed_sentinel_is_replaced_and_its_orphans_killed(clusters, make_workflow):
    make_workflow(ONE_STEP)
    make_workflow(HELD)
    cluster = clusters()
    held, _ = services.run_start(workflow="sentinel-held")
    step_commands = wait_until(
        lambda: commands(["sleep", "61.25"]), timeout=30, message="the shell step running"
    )
    sentinel = sentinel_of(cluster)
    old_processes = [pid for pid in process_tree(sentinel)]
    assert len(old_processes) >= 4, "sentinel, 2 workers, pusher and monitor"

    os.kill(sentinel, signal.SIGKILL)
    wait_until(
        lambda: "trellis worker: a new cluster started" in cluster.lines,
        timeout=30,
        message="the worker starting a new cluster",
    )
    survivors = [pid for pid in old_processes if alive(pid)]
    assert not survivors, subprocess.run(
        ["ps", "-o", "pid,ppid,stat,cmd", "-p", ",".join(map(str, survivors))],
        capture_output=True,
        text=True,
    ).stdout
    assert sentinel_of(cluster) != sentinel
    assert "sentinel died" in cluster.output()
    assert not [pid for pid in step_commands if alive(pid)], (
        "a killed worker's step command, in a session of its own, runs on"
    )
    services.run_cancel(run_id=held.pk, grace_seconds=0)

    run, _ = services.run_start(workflow="sentinel-check")
    wait_until(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=30,
        message="a run started after the restart succeeding",
    )
    assert cluster.proc.poll() is None


def test_sigterm_to_every_process_of_the_worker_stops_it(clusters, make_workflow):
    make_workflow(ONE_STEP)
    cluster = clusters()
    run, _ = services.run_start(workflow="sentinel-check")
    wait_until(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=30,
        message="the cluster running a step",
    )
    tree = process_tree(cluster.proc.pid)
    assert len(tree) >= 5
    os.killpg(cluster.proc.pid, signal.SIGTERM)
    try:
        cluster.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"trellis worker still running 30 s after SIGTERM:\n{cluster.output()}")
    assert cluster.proc.returncode == 0
    deadline = time.monotonic() + 5
    while [pid for pid in tree if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in tree if alive(pid)], "a process of the worker outlived it"
