"""A definition prepared for the engine, cached per version hash (versions never change)."""

import random
from dataclasses import dataclass, field

from workflows import definitions, graph


@dataclass(frozen=True)
class Plan:
    steps: dict[str, dict]
    graph: dict[str, list[str]]
    order: list[str]
    children: dict[str, list[str]] = field(default_factory=dict)

    def step(self, step_id: str) -> dict:
        return self.steps[step_id]

    def downstream(self, step_id: str) -> set[str]:
        return graph.downstream(self.graph, step_id)


_plans: dict[str, Plan] = {}


def plan_for(version) -> Plan:
    plan = _plans.get(version.dag_hash)
    if plan is None:
        plan = build_plan(version.definition)
        _plans[version.dag_hash] = plan
    return plan


def build_plan(document: dict) -> Plan:
    steps = {step["id"]: step for step in document["steps"]}
    dag = graph.graph_of(document["steps"])
    return Plan(steps=steps, graph=dag, order=graph.order(dag), children=graph.children_of(dag))


def retry_policy(step: dict) -> dict:
    return definitions.normalise_retries(step)


def retry_delay(step: dict, attempt: int) -> float:
    """Exponential backoff with jitter: delay * backoff^(attempt-1), capped, +/- jitter."""
    policy = retry_policy(step)
    base = min(policy["delay"] * policy["backoff"] ** max(attempt - 1, 0), policy["max_delay"])
    jitter = base * policy["jitter"]
    return max(0.0, base + random.uniform(-jitter, jitter))
