"""A definition prepared for the engine, cached per version hash (versions never change)."""

import random
from dataclasses import dataclass

from workflows import definitions, graph
from workflows.models import WorkflowVersion


@dataclass(frozen=True)
class Plan:
    definition: dict
    steps: dict[str, dict]
    graph: dict[str, list[str]]
    order: list[str]
    roots: frozenset[str] = frozenset()

    @property
    def starts_fresh(self) -> bool:
        """A new run can start with its roots queued in one go (no approval gate first)."""
        return all(definitions.step_kind(self.steps[r]) != "approval" for r in self.roots)

    def step(self, step_id: str) -> dict:
        return self.steps[step_id]

    def downstream(self, step_id: str) -> set[str]:
        return graph.downstream(self.graph, step_id)

    def upstream(self, step_id: str) -> set[str]:
        """Every step this one depends on, directly or not."""
        return graph.ancestors(self.graph, step_id)


_plans: dict[str, Plan] = {}


def plan_for(run_or_version) -> Plan:
    """The plan of a Run (by its dag_hash, no join needed) or of a WorkflowVersion."""
    digest = run_or_version.dag_hash
    plan = _plans.get(digest)
    if plan is None:
        if isinstance(run_or_version, WorkflowVersion):
            definition = run_or_version.definition
        else:
            definition = WorkflowVersion.objects.values_list("definition", flat=True).get(
                pk=run_or_version.version_id
            )
        plan = build_plan(definition)
        _plans[digest] = plan
    return plan


def build_plan(document: dict) -> Plan:
    steps = {step["id"]: step for step in document["steps"]}
    dag = graph.graph_of(document["steps"])
    return Plan(
        definition=document,
        steps=steps,
        graph=dag,
        order=graph.order(dag),
        roots=frozenset(step_id for step_id, deps in dag.items() if not deps),
    )


def retry_policy(step: dict) -> dict:
    return definitions.normalise_retries(step)


def retry_delay(step: dict, attempt: int) -> float:
    """Exponential backoff with jitter: delay * backoff^(attempt-1), capped, +/- jitter."""
    policy = retry_policy(step)
    base = min(policy["delay"] * policy["backoff"] ** max(attempt - 1, 0), policy["max_delay"])
    jitter = base * policy["jitter"]
    return max(0.0, base + random.uniform(-jitter, jitter))
