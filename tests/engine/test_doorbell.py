"""The ORM broker's doorbell: a pusher waiting for tasks wakes when one is enqueued, not at
its next poll."""

import os
import threading

import pytest
from django.conf import settings
from django.db import transaction

from runs.engine import doorbell
from runs.models import Run
from runs.services import run_start
from tests.conftest import WorkerProcess
from tests.faults.conftest import wait_all_terminal

pytestmark = pytest.mark.skipif(
    bool(settings.REDIS_URL), reason="the doorbell is the ORM broker's; Redis blocks on BLPOP"
)

CHAIN = """
name: rung
steps:
  - {id: a, kind: noop}
  - {id: b, kind: noop, depends_on: [a]}
"""


QUEUE = "bells"


@pytest.fixture
def bells(tmp_path, monkeypatch):
    folder = tmp_path / "bells"
    monkeypatch.setattr(doorbell, "directory", lambda: folder)
    return folder


def waiting(bell: doorbell.Doorbell, seconds: float) -> threading.Thread:
    """A pusher's wait for `seconds`, in a thread that binds the bell first."""
    bound = threading.Event()

    def wait():
        bell.clear()  # binds, as the pusher's first dequeue does
        bound.set()
        bell.wait(seconds)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    assert bound.wait(10)
    return thread


def test_a_ring_ends_the_wait(bells):
    thread = waiting(doorbell.Doorbell(QUEUE), 600)
    doorbell.ring(QUEUE)
    thread.join(60)  # a wait that was not rung would last ten minutes
    assert not thread.is_alive()


def test_a_ring_before_the_wait_is_not_lost_and_clear_forgets_it(bells):
    bell = doorbell.Doorbell(QUEUE)
    bell.clear()
    doorbell.ring(QUEUE)
    bell.wait(600)  # returns at once: the ring is waiting on the socket
    assert bell.sock.recv(64) == b""
    doorbell.ring(QUEUE)
    bell.clear()
    with pytest.raises(BlockingIOError):  # nothing left to read
        bell.sock.recv(64)


def test_only_the_pushers_of_the_queue_are_rung(bells):
    ours, theirs = doorbell.Doorbell(QUEUE), doorbell.Doorbell("another-queue")
    ours.clear(), theirs.clear()
    doorbell.ring(QUEUE)
    assert ours.sock.recv(64) == b""
    with pytest.raises(BlockingIOError):
        theirs.sock.recv(64)


def test_a_socket_left_by_a_gone_pusher_is_removed(bells):
    gone = doorbell.Doorbell(QUEUE)
    gone.clear()
    gone.sock.close()  # its pusher exited; the path stays
    gone.pid = None  # as a new process: binds a socket of its own
    live = doorbell.Doorbell(QUEUE)
    live.clear()
    assert len(os.listdir(bells)) == 2
    doorbell.ring(QUEUE)
    assert os.listdir(bells) == [os.path.basename(live.sock.getsockname())]
    assert live.sock.recv(64) == b""


def test_without_a_usable_socket_path_the_pusher_polls(tmp_path, monkeypatch):
    monkeypatch.setattr(doorbell, "directory", lambda: tmp_path / ("d" * 120))
    bell = doorbell.Doorbell(QUEUE)
    bell.clear()
    assert bell.sock is None
    bell.wait(0.01)  # sleeps for the poll interval
    doorbell.ring(QUEUE)  # nobody listens: nothing happens


def test_a_ring_that_fails_is_not_the_enqueuers_failure(bells, monkeypatch):
    bell = doorbell.Doorbell(QUEUE)
    bell.clear()

    def no_more_sockets(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(doorbell, "_sender", None)
    monkeypatch.setattr(doorbell.socket, "socket", no_more_sockets)
    doorbell.ring(QUEUE)  # logged, not raised


@pytest.mark.django_db(transaction=True)
def test_the_ring_waits_for_the_commit(bells, monkeypatch):
    rung = []
    monkeypatch.setattr(doorbell, "ring", lambda queue: rung.append(queue))
    broker = doorbell.RungORM(list_key="rung-test")
    with transaction.atomic():
        broker.enqueue("task")
        assert rung == []  # a pusher woken now would not see the task
    assert rung == ["rung-test"]
    broker.purge_queue()


@pytest.mark.django_db(transaction=True)
def test_a_cluster_polling_once_a_minute_runs_a_new_run_at_once(
    make_workflow, no_background_worker
):
    """With the poll at 60 s, only the doorbell can get these runs done in the 30 s the
    test waits."""
    make_workflow(CHAIN)
    cluster = WorkerProcess({"TRELLIS_POLL": "60"}).start()
    try:
        runs = [run_start(workflow="rung")[0].pk for _ in range(3)]
        wait_all_terminal(runs, timeout=30)
        statuses = set(Run.objects.filter(pk__in=runs).values_list("status", flat=True))
        assert statuses == {"succeeded"}
    finally:
        cluster.stop()  # rung too: a pusher left to its poll would be killed at 20 s
    assert cluster.proc.returncode == 0, cluster.output()
