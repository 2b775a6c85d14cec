from runs.engine import templates

CONTEXT = {
    "input": {"repo": "acme/api", "pr": 42, "tags": ["a", "b"]},
    "steps": {"s": {"outputs": {"n": "3"}}},
}


def test_whole_template_keeps_type():
    assert templates.render("{{ input.pr }}", CONTEXT) == 42
    assert templates.render({"pr": "{{input.pr}}", "tags": "{{ input.tags }}"}, CONTEXT) == {
        "pr": 42,
        "tags": ["a", "b"],
    }


def test_embedded_templates_become_text():
    assert templates.render("PR {{ input.repo }}#{{ input.pr }}", CONTEXT) == "PR acme/api#42"
    assert templates.render("missing:{{ input.nope }}.", CONTEXT) == "missing:."
    assert templates.render("{{ input.tags.1 }}", CONTEXT) == "b"


def test_shell_string_gets_variables_not_values():
    script, env = templates.shell_script(
        'echo {{ input.repo }} && echo "{{ steps.s.outputs.n }}"', CONTEXT
    )
    assert script == 'echo "${TRELLIS_ARG_1}" && echo ""${TRELLIS_ARG_2}""'
    assert env == {"TRELLIS_ARG_1": "acme/api", "TRELLIS_ARG_2": "3"}
    hostile = {"input": {"repo": '"; rm -rf / #'}}
    script, env = templates.shell_script("echo {{ input.repo }}", hostile)
    assert "rm" not in script
    assert env["TRELLIS_ARG_1"] == '"; rm -rf / #'
