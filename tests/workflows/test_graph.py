"""The pure DAG module: no database."""

from workflows import graph


def test_find_cycle_reports_the_path():
    cycle = graph.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_no_cycle_in_a_diamond():
    assert graph.find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_layers_and_order():
    dag = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert graph.layers(dag) == [["a"], ["b", "c"], ["d"]]
    assert graph.order(dag) == ["a", "b", "c", "d"]


def test_downstream_and_ancestors():
    dag = {"a": [], "b": ["a"], "c": ["b"], "x": []}
    assert graph.downstream(dag, "a") == {"b", "c"}
    assert graph.ancestors(dag, "c") == {"a", "b"}
    assert graph.downstream(dag, "x") == set()


def test_template_expressions_found_anywhere():
    value = {"command": ["echo", "{{ input.a }}"], "env": {"X": "pre {{steps.s.outputs.k}} post"}}
    assert sorted(graph.template_expressions(value)) == ["input.a", "steps.s.outputs.k"]
