"""Approval gates: quorum of distinct users, no self-approval when configured, rejection."""

import pytest

from runs import services
from runs.engine.errors import Conflict, Forbidden
from runs.models import Approval, StepOutput, StepRun
from runs.status import RunStatus, StepStatus
from tests.helpers import wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)

GATED = """
name: gated
steps:
  - {id: build, kind: noop}
  - id: sign-off
    kind: approval
    depends_on: [build]
    approvals_required: 2
    allow_self_approval: false
  - {id: publish, kind: noop, depends_on: [sign-off]}
"""


def gate(run) -> StepRun:
    return StepRun.objects.get(run=run, step_id="sign-off")


def test_quorum_of_distinct_approvers_without_self_approval(engine, make_workflow, users):
    make_workflow(GATED)
    run, _ = services.run_start(workflow="gated", user=users["owner"])
    run = wait_for_run(run.pk, statuses={RunStatus.WAITING})
    assert gate(run).status == StepStatus.WAITING_APPROVAL

    with pytest.raises(Forbidden):
        services.step_approve(run_id=run.pk, step_id="sign-off", user=users["owner"])
    services.step_approve(run_id=run.pk, step_id="sign-off", user=users["teammate"], comment="ok")
    with pytest.raises(Conflict):  # one vote per person
        services.step_approve(run_id=run.pk, step_id="sign-off", user=users["teammate"])
    assert gate(run).status == StepStatus.WAITING_APPROVAL

    services.step_approve(run_id=run.pk, step_id="sign-off", user=users["reviewer"])
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    decisions = list(
        Approval.objects.filter(step_run=gate(run)).values_list(
            "user__username", "decision", "comment"
        )
    )
    assert decisions == [("teammate", "approved", "ok"), ("reviewer", "approved", "")]


def test_one_rejection_fails_the_step(engine, make_workflow, users):
    make_workflow(GATED)
    run, _ = services.run_start(workflow="gated", user=users["owner"])
    wait_for_run(run.pk, statuses={RunStatus.WAITING})
    services.step_reject(
        run_id=run.pk, step_id="sign-off", user=users["reviewer"], comment="not today"
    )
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.FAILED
    assert gate(run).reason == "rejected"
    assert gate(run).error == "rejected by reviewer: not today"
    assert StepRun.objects.get(run=run, step_id="publish").status == StepStatus.SKIPPED
    with pytest.raises(Conflict):
        services.step_approve(run_id=run.pk, step_id="sign-off", user=users["teammate"])


def test_approval_timeout_rejects(engine, make_workflow, users):
    make_workflow(
        """
name: short-gate
steps:
  - {id: gate, kind: approval, timeout: 0.5}
"""
    )
    run, _ = services.run_start(workflow="short-gate", user=users["owner"])
    run = wait_for_run(run.pk, timeout=15)
    assert run.status == RunStatus.FAILED
    assert StepRun.objects.get(run=run, step_id="gate").reason == "timeout"


def test_cancel_while_waiting_then_resume_asks_again(engine, make_workflow, users):
    make_workflow(GATED)
    run, _ = services.run_start(workflow="gated", user=users["owner"])
    wait_for_run(run.pk, statuses={RunStatus.WAITING})
    services.run_cancel(run_id=run.pk)
    assert wait_for_run(run.pk).status == RunStatus.CANCELLED
    services.run_resume(run_id=run.pk)
    run = wait_for_run(run.pk, statuses={RunStatus.WAITING})
    assert StepRun.objects.get(run=run, step_id="build").attempt == 1
    assert gate(run).status == StepStatus.WAITING_APPROVAL


def test_resume_after_a_rejection_asks_again_and_keeps_the_first_round(
    engine, make_workflow, users
):
    make_workflow(GATED)
    run, _ = services.run_start(workflow="gated", user=users["owner"])
    wait_for_run(run.pk, statuses={RunStatus.WAITING})
    services.step_approve(run_id=run.pk, step_id="sign-off", user=users["teammate"])
    services.step_reject(run_id=run.pk, step_id="sign-off", user=users["reviewer"], comment="no")
    assert wait_for_run(run.pk).status == RunStatus.FAILED

    services.run_resume(run_id=run.pk)
    run = wait_for_run(run.pk, statuses={RunStatus.WAITING})
    assert gate(run).attempt == 2
    # The first round's approval does not count towards the second: two new ones are needed.
    services.step_approve(run_id=run.pk, step_id="sign-off", user=users["reviewer"], comment="ok")
    assert gate(run).status == StepStatus.WAITING_APPROVAL
    services.step_approve(run_id=run.pk, step_id="sign-off", user=users["teammate"])
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED

    history = list(
        Approval.objects.filter(step_run=gate(run))
        .order_by("created_at", "pk")
        .values_list("attempt", "user__username", "decision", "comment")
    )
    assert history == [
        (1, "teammate", "approved", ""),
        (1, "reviewer", "rejected", "no"),
        (2, "reviewer", "approved", "ok"),
        (2, "teammate", "approved", ""),
    ]
    approved_by = StepOutput.objects.get(step_run=gate(run), key="approved_by").value
    assert approved_by == ["reviewer", "teammate"]
