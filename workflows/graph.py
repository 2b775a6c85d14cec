"""Pure DAG logic: no ORM, no I/O. A graph is a mapping step id -> list of upstream ids."""

import re
from collections.abc import Iterable, Mapping

Graph = Mapping[str, list[str]]

TEMPLATE_RE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def graph_of(steps: Iterable[Mapping]) -> dict[str, list[str]]:
    return {step["id"]: list(step.get("depends_on") or []) for step in steps}


def find_cycle(graph: Graph) -> list[str] | None:
    """Return one cycle as a path [a, b, ..., a], or None. Unknown ids are ignored."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in graph:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in graph:
                    continue
                if state.get(child) == 1:
                    return path[path.index(child) :] + [child]
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, iter(graph[child])))
                    path.append(child)
                    break
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def layers(graph: Graph) -> list[list[str]]:
    """Topological layers: each layer depends only on earlier ones. Assumes no cycle."""
    remaining = {node: set(deps) for node, deps in graph.items()}
    result: list[list[str]] = []
    while remaining:
        ready = [node for node, deps in remaining.items() if not deps]
        if not ready:
            raise ValueError("graph has a cycle")
        result.append(ready)
        for node in ready:
            del remaining[node]
        for deps in remaining.values():
            deps.difference_update(ready)
    return result


def order(graph: Graph) -> list[str]:
    return [node for layer in layers(graph) for node in layer]


def children_of(graph: Graph) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            children.setdefault(dep, []).append(node)
    return children


def downstream(graph: Graph, start: str) -> set[str]:
    """Every step that depends, directly or not, on `start` (not including it)."""
    children = children_of(graph)
    seen: set[str] = set()
    todo = list(children.get(start, []))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(children.get(node, []))
    return seen


def ancestors(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, []))
    while todo:
        node = todo.pop()
        if node not in seen and node in graph:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def template_expressions(value) -> list[str]:
    """Every `{{ expr }}` found in strings nested anywhere inside `value`."""
    found: list[str] = []
    if isinstance(value, str):
        found.extend(TEMPLATE_RE.findall(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(template_expressions(key))
            found.extend(template_expressions(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(template_expressions(item))
    return found
