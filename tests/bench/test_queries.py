"""SQL statements per step transition, counted as a worker drives a run (no broker hop:
the task function called in-process). A budget, so an added query is a visible choice."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import bench, services
from runs.engine import worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Nothing reaches a broker, so no other worker can take a step of these runs."""
    monkeypatch.setattr(services, "enqueue_steps", lambda steps: None)
    monkeypatch.setattr(worker, "enqueue_steps", lambda steps: None)


CHAIN = """
name: q-chain
steps:
  - {id: a, kind: noop}
  - {id: b, kind: noop, depends_on: [a]}
  - {id: c, kind: noop, depends_on: [b]}
  - {id: d, kind: noop, depends_on: [c]}
  - {id: e, kind: noop, depends_on: [d]}
"""
FANOUT = (
    """
name: q-fanout
steps:
  - {id: root, kind: noop}
"""
    + "".join(f"  - {{id: p{i}, kind: noop, depends_on: [root]}}\n" for i in range(40))
    + """
  - {id: join, kind: noop, depends_on: ["""
    + ", ".join(f"p{i}" for i in range(40))
    + """]}
"""
)


def test_chain_queries_per_step(make_workflow):
    make_workflow(CHAIN)
    run, _ = services.run_start(workflow="q-chain")
    figures = bench.queries_of_task(run)
    assert figures["tasks"] == 1, "one task runs the whole chain: no broker hop per step"
    # One transaction per step: lock the run and read the step states, then the writes:
    # finish the step, its attempt row, claim the next step, the events, the run row, and
    # at the run's end the looks for its workflow's waiting runs and for other runs' steps
    # that no task will bring. SQLite executes each (and BEGIN IMMEDIATE); PostgreSQL
    # gets the lock with the states in one round trip and the rest with the COMMIT in
    # another. Plus, once per task, the first claim.
    per_step, per_task = (2, 2) if connection.vendor == "postgresql" else (9, 10)
    assert figures["queries"] <= per_step * figures["steps"] + per_task, figures


def test_fanout_queries_per_step(make_workflow):
    make_workflow(FANOUT)
    run, _ = services.run_start(workflow="q-fanout")
    figures = bench.queries_of_task(run)
    assert figures["steps"] == 42
    budget = 1 if connection.vendor == "postgresql" else 3
    assert figures["per_step"] <= budget, figures


def test_run_start_queries(make_workflow):
    """A run started by name as the API does: on PostgreSQL the workflow is read with the
    count of active runs (the global cap), then the run, its steps and events go in one
    INSERT round trip. A `max_active_runs` serialises starts of the workflow, which costs
    a transaction and the workflow's own count. SQLite counts inside its write lock."""
    make_workflow(CHAIN)
    make_workflow(CHAIN.replace("name: q-chain", "name: q-limited\nmax_active_runs: 5"))
    postgres = connection.vendor == "postgresql"
    for name, budget in (("q-chain", 2 if postgres else 7), ("q-limited", 7 if postgres else 9)):
        services.run_start(workflow=name)  # the first start of a version reads its definition
        with CaptureQueriesContext(connection) as queries:
            services.run_start(workflow=name)
        sent = bench.round_trips(queries.captured_queries)
        assert sent <= budget, (name, [q["sql"][:80] for q in queries])
