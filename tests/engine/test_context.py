"""What a step sees of the run: its input and params, and the outputs of its upstream
steps only."""

import pytest

from runs import services
from runs.engine import executors, worker
from runs.models import StepOutput, StepRun

pytestmark = pytest.mark.django_db

DIAMOND = """
name: ctx-diamond
params: {region: eu}
steps:
  - {id: a, kind: noop}
  - {id: b, kind: python, callable: examples.review.lint, depends_on: [a]}
  - {id: c, kind: python, callable: examples.review.lint, depends_on: [a]}
  - {id: d, kind: python, callable: examples.review.lint, depends_on: [b, c]}
"""


@pytest.fixture
def run(make_workflow, monkeypatch):
    monkeypatch.setattr(services, "enqueue_steps", lambda steps: None)
    monkeypatch.setattr(worker, "enqueue_steps", lambda steps: None)
    make_workflow(DIAMOND)
    run, _ = services.run_start(workflow="ctx-diamond", input={"pr": 7})
    for step_id in ("a", "b", "c"):  # as if they had finished, each with an output
        step = StepRun.objects.get(run=run, step_id=step_id)
        StepOutput.objects.create(run=run, step_run=step, key="made_by", value=step_id)
    return run


def context_of(run, step_id: str) -> dict:
    step = StepRun.objects.select_related("run").get(run=run, step_id=step_id)
    spec = next(s for s in step.run.version.definition["steps"] if s["id"] == step_id)
    return executors.step_context(step, spec)


def test_a_step_sees_its_upstream_outputs_and_not_its_siblings(run):
    context = context_of(run, "c")
    assert context["steps"] == {"a": {"outputs": {"made_by": "a"}}}
    assert (context["input"], context["params"]) == ({"pr": 7}, {"region": "eu"})


def test_a_join_sees_every_step_upstream_of_it(run):
    assert set(context_of(run, "d")["steps"]) == {"a", "b", "c"}
    assert context_of(run, "a")["steps"] == {}
