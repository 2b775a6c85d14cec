"""The `trellis` CLI given hostile arguments and files: one clear `error:` line on stderr, a
non-zero exit, no traceback, nothing created; and shell metacharacters in the inputs it
starts runs with reach shell steps only as data.

Most cases run the command in this process (the same argv parsing and error handling as
the installed command, in milliseconds); a representative few run `trellis` as a real
process against the test database, several at a time."""

import contextlib
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import ManagementUtility

from runs import cli as cli_module
from runs.services import MAX_BULK
from tests.api.conftest import start
from tests.conftest import ROOT, database_url_for_tests
from tests.helpers import wait_for_run
from tests.hostile.conftest import nothing_changes
from tests.hostile.test_shell import WORKFLOW as ECHOES
from tests.hostile.test_shell import payloads, stdout_of

CLI_USER = "mallory"  # does not exist before: a refused command must not create it
HUGE = "9" * 30
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_ARGUMENT = "[" * 50_000 + "]" * 50_000  # one argv string may hold at most 128 KiB


def run_cli(*args: str) -> tuple[int, str, str]:
    """`trellis <args>` in this process: (exit code, stdout, stderr). An exception the
    command does not turn into an error line propagates (the traceback a user would see)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ManagementUtility(["trellis", *args]).execute()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def cli_env(monkeypatch):
    monkeypatch.setenv("TRELLIS_USER", CLI_USER)
    # the command closes its connections when done; here that would end the test's transaction
    monkeypatch.setattr(cli_module.connections, "close_all", lambda: None)


def assert_refused(code: int, out: str, err: str, fragment: str = "") -> str:
    lines = err.strip().splitlines()
    assert code != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert "\x00" not in lines[0]
    assert len(lines[0]) < 2000, "the error echoes a huge value"
    if fragment:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


@pytest.fixture
def files(tmp_path):
    def write(name: str, data: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    return write


START_CASES = [
    (["--input", '{"n": 1'], "not valid JSON"),
    (["--input", "{'n': 1}"], "not valid JSON"),
    (["--input", ""], "not valid JSON"),
    (["--input", "[1]"], "object"),
    (["--input", "null"], ""),
    (["--input", '"text"'], "object"),
    (["--input", '{"n": "x"}'], "input.n"),
    (["--input", '{"n": 1, "x": "a\\u0000b"}'], "NUL"),
    (["--input", '{"n": 1, "a\\u0000": 1}'], "NUL"),
    (["--input", '{"n": 1, "x": "\\ud800"}'], "surrogate"),
    (["--input", '{"n": 1, "x": 1e999}'], "finite"),
    (["--input", '{"n": 1, "x": NaN}'], ""),
    (["--input", '{"n": 1, "x": -Infinity}'], ""),
    (["--input", DEEP], ""),
    (["--input", '{"n": 1, "x": ' + "[" * 500 + "]" * 500 + "}"], "nested"),
    (["--input", '{"n": 1}', "--params", "[1]"], "params"),
    (["--input", '{"n": 1}', "--params", '{"x": "\\u0000"}'], "NUL"),
    (["--input", '{"n": 1}', "--params", '{"x": 1e999}'], "finite"),
    (["--input", '{"n": 1}', "--params", DEEP], ""),
    (["--input", '{"n": 1}', "--idempotency-key", "k" * 300], "idempotency"),
    (["--input", '{"n": 1}', "--start-at", "garbage"], "start-at"),
    (["--input", '{"n": 1}', "--start-at", "99999-01-01T00:00:00"], "start-at"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("extra, fragment", START_CASES)
def test_run_start_refusals(typed, extra, fragment):
    with nothing_changes():
        assert_refused(*run_cli("run", "start", "typed", *extra), fragment)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "typed/../typed", "%2e%2e%2f", "", "x" * 10_000, "\udcff"],
)
def test_path_like_and_odd_workflow_names(typed, name):
    with nothing_changes():
        line = assert_refused(*run_cli("run", "start", name, "--input", '{"n": 1}'))
        assert_refused(*run_cli("run", "bulk", name, '{"n": 1}'))
        assert_refused(*run_cli("workflow", "show", name))
    assert "root:" not in line


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "get", "../../etc/passwd"], "no run"),
        (["run", "get", "\udcff"], ""),
        (["run", "get", "0" * 10_000], "no run"),
        (["run", "cancel", "../x"], "no run"),
        (["run", "resume", "%00"], "no run"),
        (["run", "logs", "../../etc/passwd"], "no run"),
        (["run", "approve", "../x", "sign-off"], "no run"),
        (["run", "reject", "\udcff", "sign-off"], ""),
    ],
)
def test_unknown_and_path_like_run_ids(failed_run, args, fragment):
    with nothing_changes():
        assert_refused(*run_cli(*args), fragment)


@pytest.mark.django_db
def test_hostile_arguments_about_an_existing_run(failed_run, gated):
    run_id = failed_run.pk
    waiting = start("gated")
    cases = [
        (["run", "rerun", run_id, "--from", "../transform"], "transform"),
        (["run", "rerun", run_id, "--from", "\udcff"], ""),
        (["run", "logs", run_id, "../../etc/passwd"], "no step"),
        (["run", "logs", run_id, "transform", "--attempt", HUGE], "attempt"),
        (["run", "logs", run_id, "transform", "--attempt", "-1"], "attempt"),
        (["run", "cancel", waiting.pk, "--grace", "nan"], "grace"),
        (["run", "cancel", waiting.pk, "--grace", "-1"], "grace"),
        (["run", "cancel", waiting.pk, "--grace", "inf"], "grace"),
        (["run", "approve", waiting.pk, "ghost"], "ghost"),
        (["run", "approve", waiting.pk, "sign-off", "--comment", "x" * 20_000], "comment"),
        (["run", "reject", waiting.pk, "sign-off", "--comment", "\udcff"], ""),
        (["run", "list", "--offset", "-1"], "offset"),
        (["run", "list", "--offset", HUGE], "offset"),
        (["run", "list", "--limit", HUGE], ""),
        (["run", "list", "--status", "exploded"], "status"),
        (["run", "list", "--trigger", "pigeon"], "trigger"),
    ]
    for args, fragment in cases:
        with nothing_changes():
            code, out, err = run_cli(*args)
            if args[1] == "list" and args[2] == "--limit":
                assert code == 0 and "Traceback" not in err, err  # capped at 1000
                continue
            assert_refused(code, out, err, fragment)


@pytest.mark.django_db
def test_bulk_files(typed, files):
    lines = [json.dumps({"n": i}) for i in range(10)]
    cases = [
        (files("bad-line.jsonl", "\n".join(lines[:4] + ["{oops"] + lines[4:])), "line 5"),
        (files("nul-escape.jsonl", "\n".join(lines[:6] + ['{"n": 1, "x": "\\u0000"}'])), "line 7"),
        (files("raw-nul.jsonl", "\n".join(lines[:2]) + '\n{"n": 1, "x": "a\x00b"}\n'), "line 3"),
        (files("nul-only.jsonl", b"\x00\x00\x00\n"), "line 1"),
        (files("latin-1.jsonl", '{"n": 1}\n{"n": 2, "x": "caf\xe9"}\n'.encode("latin-1")), "UTF-8"),
        (files("utf-16.jsonl", '{"n": 1}\n'.encode("utf-16")), ""),
        (files("surrogate.jsonl", '{"n": 1}\n{"n": 2, "x": "\\udfff"}\n'), "line 2"),
        (files("inf.jsonl", '{"n": 1}\n{"n": 2, "x": 1e999}\n'), "line 2"),
        (files("nan.jsonl", '{"n": 1}\n{"n": 2, "x": NaN}\n'), "line 2"),
        (files("list.jsonl", "[1, 2]\n"), "line 1"),
        (files("deep.jsonl", '{"n": 1}\n' + DEEP + "\n"), "line 2"),
        (files("empty.jsonl", ""), "no inputs"),
        (files("blank.jsonl", "\n\n  \n"), "no inputs"),
        (files("binary.jsonl", bytes(range(256))), ""),
        ("/nonexistent/inputs.jsonl", "no such file"),
        (os.path.dirname(files("x", "")), "no such file"),
        ("/dev/zero", "no such file"),
    ]
    for path, fragment in cases:
        with nothing_changes():
            assert_refused(*run_cli("run", "bulk", "typed", "--from-file", path), fragment)
    with nothing_changes():
        assert_refused(*run_cli("run", "bulk", "typed", '{"n": 1}', "{bad"), "argument 2")
        assert_refused(*run_cli("run", "bulk", "typed", '{"n": 1}', '{"n": "x"}'), "argument 2")
        assert_refused(*run_cli("run", "bulk", "typed"), "no inputs")


@pytest.mark.django_db
def test_bulk_files_past_the_limit_create_nothing(typed, files):
    body = "\n".join(f'{{"n":{i}}}' for i in range(MAX_BULK + 1)) + "\n"
    too_many = files("too-many.jsonl", body)
    with nothing_changes():
        assert_refused(*run_cli("run", "bulk", "typed", "--from-file", too_many), str(MAX_BULK))
    lines = body.splitlines()[:MAX_BULK]
    lines[-1] = '{"n": "last"}'
    bad_last = files("bad-last.jsonl", "\n".join(lines) + "\n")
    with nothing_changes():
        line = assert_refused(*run_cli("run", "bulk", "typed", "--from-file", bad_last))
    assert f"line {MAX_BULK}" in line and "nothing was created" in line, line


@pytest.mark.django_db
def test_workflow_commands(typed, files):
    cases = [
        (["workflow", "validate", files("deep.yaml", "[" * 100_000)], ""),
        (["workflow", "validate", files("deep.json", DEEP)], ""),
        (["workflow", "validate", files("nul.yaml", "name: x\nsteps: [{id: a}]\n#\x00\n")], ""),
        (["workflow", "validate", files("bin.yaml", bytes(range(256)))], ""),
        (
            [
                "workflow",
                "validate",
                files("date-key.yaml", "name: x\nsteps: [{id: a}]\n2024-01-01: x\n"),
            ],
            "",
        ),  # fmt: skip
        (
            [
                "workflow",
                "validate",
                files("inf.yaml", "name: x\ntimeout: .inf\nsteps: [{id: a}]\n"),
            ],
            "",
        ),  # fmt: skip
        (
            [
                "workflow",
                "validate",
                files(
                    "tz.yaml",
                    "name: x\nschedule: {cron: '* * * * *', timezone: Europe}\nsteps: [{id: a}]\n",
                ),
            ],
            "",
        ),  # fmt: skip
        (
            [
                "workflow",
                "validate",
                files("http.yaml", "name: x\nhttp: {method: 5}\nsteps: [{id: a}]\n"),
            ],
            "",
        ),  # fmt: skip
        (
            ["workflow", "validate", files("kind.yaml", "name: x\nsteps: [{id: a, kind: [1]}]\n")],
            "",
        ),  # fmt: skip
        (
            [
                "workflow",
                "validate",
                files("python.yaml", "!!python/object/apply:os.system [id]\n"),
            ],
            "",
        ),  # fmt: skip
        (["workflow", "validate", "/etc/passwd"], ""),
        (["workflow", "validate", "/nonexistent.yaml"], "no such file"),
        (["workflow", "validate", "/tmp"], "no such file"),
        (["workflow", "sync", "/nonexistent"], "no such directory"),
        (["workflow", "show", "\udcff"], ""),
    ]
    mixed = files("mixed-keys.yaml", "name: x\nsteps: [{id: a}]\n1: x\n")
    code, out, err = run_cli("workflow", "validate", mixed)  # the key reads as "1"
    assert code == 0 and "unknown field '1'" in err, err
    for args, fragment in cases:
        with nothing_changes():
            code, out, err = run_cli(*args)
            assert code != 0 and "Traceback" not in err, (args[-1][-40:], err)
            assert err.strip().splitlines()[-1].startswith("error: "), err
            assert "root:" not in out + err
            if fragment:
                assert fragment in err


@pytest.mark.django_db
def test_workflow_sync_with_hostile_files_loads_the_good_ones(typed, tmp_path):
    (tmp_path / "good.yaml").write_text("name: good\nsteps: [{id: a}]\n")
    (tmp_path / "deep.yaml").write_text("[" * 100_000)
    (tmp_path / "nul.json").write_text('{"name": "nul", "steps": [{"id": "a\\u0000"}]}')
    (tmp_path / "date.yaml").write_text("name: dated\nsteps: [{id: a}]\n2024-01-01: x\n")
    (tmp_path / "never.yaml").write_text("name: never\nschedule: '0 0 31 2 *'\nsteps: [{id: a}]\n")
    code, out, err = run_cli("workflow", "sync", str(tmp_path))
    assert code != 0 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "error: 4 file(s) not loaded", err
    from workflows.models import Workflow

    assert sorted(Workflow.objects.values_list("name", flat=True)) == ["good", "typed"]


@pytest.mark.django_db
def test_token_commands(users):
    from api.models import ApiToken

    ApiToken.issue(user=users["owner"], scopes=["admin"])
    cases = [
        (["token", "create", "--user", "nobody"], "no user"),
        (["token", "create", "--user", "../owner"], "no user"),
        (["token", "create", "--user", "owner", "--scope", "root"], "scope"),
        (["token", "create", "--user", "owner", "--scope", ""], "scope"),
        (["token", "create", "--user", "owner", "--expires", "never"], "--expires"),
        (["token", "create", "--user", "owner", "--expires", "-5d"], "--expires"),
        (["token", "create", "--user", "owner", "--expires", "1e400d"], "--expires"),
        (["token", "create", "--user", "owner", "--expires", HUGE + "w"], "--expires"),
        (["token", "create", "--user", "owner", "--name", "x" * 500], "name"),
        (["token", "create", "--user", "owner", "--name", "\udcff"], ""),
        (["token", "revoke", ""], ""),
        (["token", "revoke", "t"], ""),
        (["token", "revoke", "trl_"], ""),
        (["token", "revoke", "%"], ""),
        (["token", "revoke", "\udcff"], ""),
    ]
    for args, fragment in cases:
        with nothing_changes():
            assert_refused(*run_cli(*args), fragment)


# --- as a real process -------------------------------------------------------------------


def trellis(args: list, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_tests(),
        "TRELLIS_USER": CLI_USER,
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_as_a_real_process(make_workflow, tmp_path):
    from tests.hostile.conftest import TYPED

    make_workflow(TYPED)
    nul_file = tmp_path / "nul.jsonl"
    nul_file.write_bytes(b'{"n": 1}\n{"n": 2, "x": "\\u0000"}\n')
    big_file = tmp_path / "big.jsonl"
    big_file.write_text("".join(f'{{"n":{i}}}\n' for i in range(MAX_BULK + 1)))
    cases = [
        (["run", "start", "typed", "--input", '{"n": 1'], b"not valid JSON"),
        (["run", "start", "typed", "--input", DEEP_ARGUMENT], b"error: "),
        (["run", "start", b"\xff\xfe"], b"error: "),  # not UTF-8: arrives as surrogates
        (["run", "bulk", "typed", "--from-file", str(nul_file)], b"line 2"),
        (["run", "bulk", "typed", "--from-file", str(big_file)], str(MAX_BULK).encode()),
    ]
    with nothing_changes(), ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: trellis(case[0]), cases))
    for (args, fragment), result in zip(cases, results, strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, (args[:3], result.stdout, result.stderr)
        assert b"Traceback" not in result.stderr, (args[:3], result.stderr[-3000:])
        assert len(lines) == 1 and lines[0].startswith(b"error: "), (args[:3], lines)
        assert fragment in lines[0], (args[:3], lines[0])


@pytest.mark.timeout(120)
def test_shell_metacharacters_in_cli_inputs_are_only_data(engine, make_workflow, tmp_path):
    """H7 from the command line: `run start --input '<json>'` and a bulk file, each value
    handed to shell steps (string command, argv, env, embedded, downstream) by a real
    worker, printed back literally; no canary file created or removed."""
    directory, new = tmp_path / "canary", tmp_path / "created-by-injection"
    directory.mkdir()
    existing = directory / "keep-me"
    existing.write_text("still here")
    make_workflow(ECHOES)
    cases = payloads(str(new), str(existing), str(directory))
    together = " ".join(cases)  # every payload at once, in one --input
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"payload": case}) + "\n" for case in cases))
    commands = [
        ["run", "start", "echoes", "--input", json.dumps({"payload": together}), "--json"],
        ["run", "bulk", "echoes", "--from-file", str(inputs), "--json"],
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        started, bulk = pool.map(trellis, commands)
    for result in (started, bulk):
        assert result.returncode == 0, result.stderr[-2000:]
    runs = [(together, json.loads(started.stdout)["run_id"])]
    runs += zip(cases, json.loads(bulk.stdout)["run_ids"], strict=True)
    for payload, run_id in runs:
        run = wait_for_run(run_id, timeout=60)
        assert run.status == "succeeded", (payload, run.error)
        assert run.input == {"payload": payload}
        for step_id in ("string-command", "argv-command", "env-value", "downstream"):
            out = stdout_of(run, step_id)
            assert out.endswith(f"[{payload}]\n"), (payload, step_id, out)
        assert stdout_of(run, "embedded") == f"[before{payload}after]\n", payload
    assert not new.exists(), "an input created a file"
    assert existing.read_text() == "still here", "an input changed or removed a file"
    assert sorted(p.name for p in directory.iterdir()) == ["keep-me"]
