"""Shell metacharacters in run inputs reach shell steps only as data: through a real worker,
every payload is printed back literally and no canary file is created or removed."""

import pytest

from runs.models import LogChunk, Run
from runs.status import RunStatus
from tests.helpers import wait_for_run
from tests.hostile.conftest import post_json

WORKFLOW = """
name: echoes
steps:
  - id: string-command
    kind: shell
    command: "printf '[%s]\\\\n' {{ input.payload }}"
  - id: argv-command
    kind: shell
    command: ["printf", "[%s]\\\\n", "{{ input.payload }}"]
  - id: env-value
    kind: shell
    command: 'printf "[%s]\\\\n" "$PAYLOAD"'
    env: {PAYLOAD: "{{ input.payload }}"}
  - id: embedded
    kind: shell
    command: "printf '[%s]\\\\n' before{{ input.payload }}after"
  - id: downstream
    kind: shell
    depends_on: [string-command]
    command: "printf '[%s]\\\\n' {{ steps.string-command.outputs.missing }} {{ input.payload }}"
"""


def payloads(new: str, existing: str, directory: str) -> list[str]:
    return [
        f'"; touch {new} #',
        f"'; touch {new} #",
        f"$(touch {new})",
        f"`touch {new}`",
        f"${{IFS}}$(touch${{IFS}}{new})",
        f"x\ntouch {new}\n",
        f"x\r\ntouch {new}",
        f"; rm -f {existing}",
        f"&& rm -f {existing}",
        f"| rm -f {existing}",
        f"|| rm -rf {directory}",
        f"$(rm -f {existing})",
        f"> {existing}",
        f"< /etc/passwd > {new}",
        f'\\"; touch {new}; echo \\"',
        "{{ run.id }}",
        "$HOME ${PATH} $TRELLIS_OUTPUT",
        "*",
        "-n",
        "--help",
        '"; rm -rf / #',
    ]


def stdout_of(run, step_id: str) -> str:
    chunks = LogChunk.objects.filter(step_run__run=run, step_run__step_id=step_id, stream="stdout")
    return "".join(chunks.order_by("offset").values_list("text", flat=True))


@pytest.fixture
def canary(tmp_path):
    directory = tmp_path / "canary"
    directory.mkdir()
    existing = directory / "keep-me"
    existing.write_text("still here")
    return directory, existing, tmp_path / "created-by-injection"


@pytest.mark.timeout(120)
def test_shell_metacharacters_are_only_data(engine, make_workflow, api, canary):
    directory, existing, new = canary
    make_workflow(WORKFLOW)
    cases = payloads(str(new), str(existing), str(directory))
    started = []
    for payload in cases:
        response = post_json(
            api, "/api/v1/runs", {"workflow": "echoes", "input": {"payload": payload}}
        )
        assert response.status_code == 201, response.content
        started.append((payload, response.json()["run_id"]))
    for payload, run_id in started:
        run = wait_for_run(run_id, timeout=60)
        assert run.status == RunStatus.SUCCEEDED, (payload, run.error)
        for step_id in ("string-command", "argv-command", "env-value", "downstream"):
            out = stdout_of(run, step_id)
            assert out.endswith(f"[{payload}]\n"), (payload, step_id, out)
        embedded = stdout_of(run, "embedded")
        assert embedded == f"[before{payload}after]\n", (payload, embedded)
    assert not new.exists(), "an input created a file"
    assert existing.read_text() == "still here", "an input changed or removed a file"
    assert sorted(p.name for p in directory.iterdir()) == ["keep-me"]
    assert Run.objects.filter(workflow__name="echoes").count() == len(cases)
