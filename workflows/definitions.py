"""Parse and validate workflow documents (SPEC §2). Errors name the field and the step."""

import hashlib
import json
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml
from croniter import croniter

from workflows import graph

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
STEP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
STEP_KINDS = ("shell", "python", "http", "approval", "respond", "noop")
CALLABLE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
TEMPLATE_ROOTS = ("input", "params", "run", "steps")
OVERLAP = ("queue", "skip", "cancel_running")
CATCHUP = ("all", "latest", "none")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

TOP_LEVEL_KEYS = {
    "name", "description", "input_schema", "params", "schedule", "max_active_runs", "overlap",
    "timeout", "triggers", "webhook", "http", "steps", "notify_url", "tags",
}  # fmt: skip
STEP_KEYS = {
    "id", "kind", "description", "depends_on", "retries", "timeout", "continue_on_failure",
    "command", "env", "workdir", "callable", "method", "url", "headers", "json", "body",
    "expect_status", "approvals_required", "allow_self_approval", "status",
}  # fmt: skip


class DefinitionError(ValueError):
    """A document that cannot be parsed or is not a valid workflow."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors))


@dataclass
class Validation:
    errors: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    def error(self, path: str, message: str) -> None:
        self.errors.append({"path": path, "message": message})

    def warn(self, path: str, message: str) -> None:
        self.warnings.append({"path": path, "message": message})


def parse_document(text: str | bytes, filename: str = "") -> dict:
    """YAML is a superset of JSON, so one parser reads both."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DefinitionError([{"path": "", "message": "document is not UTF-8"}]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DefinitionError(
            [
                {
                    "path": "",
                    "message": f"not valid YAML or JSON{where}: {getattr(exc, 'problem', exc)}",
                }
            ]
        ) from None
    if not isinstance(document, dict):
        raise DefinitionError([{"path": "", "message": "a workflow document must be a mapping"}])
    return document


def dag_hash(document: dict) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate(document) -> Validation:
    result = Validation()
    if not isinstance(document, dict):
        result.error("", "a workflow document must be a mapping")
        return result
    where = nul_path(document, "")
    if where is not None:
        result.error(where.lstrip("."), "contains a NUL character, which cannot be stored")
        return result
    for key in sorted(set(document) - TOP_LEVEL_KEYS):
        result.warn(str(key), f"unknown field {key!r} is ignored")
    _validate_name(document.get("name"), result)
    _validate_top_level(document, result)
    _validate_schedule(document.get("schedule"), result)
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        result.error("steps", "a workflow needs a non-empty list of steps")
        return result
    ids = _validate_step_ids(steps, result)
    for index, step in enumerate(steps):
        if isinstance(step, dict):
            _validate_step(step, f"steps[{index}]({step.get('id', '?')})", ids, result)
    if not result.errors:
        _validate_graph(steps, result)
    return result


def validate_or_raise(document) -> Validation:
    result = validate(document)
    if not result.valid:
        raise DefinitionError(result.errors)
    return result


def _validate_name(name, result: Validation) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        result.error(
            "name",
            "name is required: lowercase letters, digits, '-' and '_', starting with a letter "
            "or digit, at most 100 characters",
        )


def _positive_number(value, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value >= 0 if allow_zero else value > 0


def _validate_top_level(document: dict, result: Validation) -> None:
    if "description" in document and not isinstance(document["description"], str):
        result.error("description", "description must be a string")
    schema = document.get("input_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            result.error("input_schema", "input_schema must be a JSON Schema object")
        else:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path)
                result.error("input_schema" + (f".{where}" if where else ""), exc.message)
    if "params" in document and not isinstance(document["params"], dict):
        result.error("params", "params must be a mapping of default values")
    mar = document.get("max_active_runs")
    if mar is not None and (isinstance(mar, bool) or not isinstance(mar, int) or mar < 1):
        result.error("max_active_runs", "max_active_runs must be an integer of at least 1")
    if document.get("overlap", "queue") not in OVERLAP:
        result.error("overlap", f"overlap must be one of {', '.join(OVERLAP)}")
    if "timeout" in document and not _positive_number(document["timeout"]):
        result.error("timeout", "timeout must be a positive number of seconds")
    triggers = document.get("triggers")
    if triggers is not None:
        if not isinstance(triggers, list):
            result.error("triggers", "triggers must be a list")
        else:
            for index, trig in enumerate(triggers):
                ok = isinstance(trig, dict) and len(trig) == 1
                ok = ok and next(iter(trig)) in ("event", "workflow_succeeded", "workflow_failed")
                ok = ok and isinstance(next(iter(trig.values())), str)
                if not ok:
                    result.error(
                        f"triggers[{index}]",
                        "a trigger is {event: <type>} or {workflow_succeeded: <name>}",
                    )
    for key in ("webhook", "http"):
        if key in document and not isinstance(document[key], dict):
            result.error(key, f"{key} must be a mapping")
    http = document.get("http")
    if isinstance(http, dict) and http.get("method", "POST").upper() not in HTTP_METHODS:
        result.error("http.method", f"method must be one of {', '.join(HTTP_METHODS)}")


def _validate_schedule(schedule, result: Validation) -> None:
    if schedule is None:
        return
    if isinstance(schedule, str):
        schedule = {"cron": schedule}
    if not isinstance(schedule, dict):
        result.error("schedule", "schedule must be a cron string or a mapping with cron")
        return
    cron = schedule.get("cron")
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        result.error("schedule.cron", f"{cron!r} is not a valid cron expression")
    tz = schedule.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        result.error("schedule.timezone", f"unknown timezone {tz!r}")
    if schedule.get("catchup", "latest") not in CATCHUP:
        result.error("schedule.catchup", f"catchup must be one of {', '.join(CATCHUP)}")
    if "input" in schedule and not isinstance(schedule["input"], dict):
        result.error("schedule.input", "schedule input must be a mapping")


def _validate_step_ids(steps: list, result: Validation) -> set[str]:
    ids: set[str] = set()
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            result.error(f"steps[{index}]", "a step must be a mapping")
            continue
        step_id = step.get("id")
        if not isinstance(step_id, str) or not STEP_ID_RE.match(step_id):
            result.error(
                f"steps[{index}].id",
                "step id is required: letters, digits, '-' and '_', at most 100 characters",
            )
        elif step_id in ids:
            result.error(f"steps[{index}]({step_id}).id", f"duplicate step id {step_id!r}")
        else:
            ids.add(step_id)
    return ids


def _validate_step(step: dict, where: str, ids: set[str], result: Validation) -> None:
    for key in sorted(set(step) - STEP_KEYS):
        result.warn(f"{where}.{key}", f"unknown field {key!r} is ignored")
    kind = step.get("kind", "noop" if "command" not in step else "shell")
    if kind not in STEP_KINDS:
        result.error(f"{where}.kind", f"unknown kind {kind!r}; use one of {', '.join(STEP_KINDS)}")
    deps = step.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        result.error(f"{where}.depends_on", "depends_on must be a list of step ids")
    else:
        for dep in deps:
            if dep not in ids:
                result.error(f"{where}.depends_on", f"unknown step {dep!r}")
            if dep == step.get("id"):
                result.error(f"{where}.depends_on", "a step cannot depend on itself")
    if "timeout" in step and not _positive_number(step["timeout"]):
        result.error(f"{where}.timeout", "timeout must be a positive number of seconds")
    if "continue_on_failure" in step and not isinstance(step["continue_on_failure"], bool):
        result.error(f"{where}.continue_on_failure", "continue_on_failure must be true or false")
    _validate_retries(step.get("retries"), where, result)
    {
        "shell": _validate_shell,
        "python": _validate_python,
        "http": _validate_http,
        "approval": _validate_approval,
    }.get(kind, lambda *a: None)(step, where, result)


def _validate_retries(retries, where: str, result: Validation) -> None:
    if retries is None:
        return
    if isinstance(retries, int) and not isinstance(retries, bool):
        retries = {"max_attempts": retries + 1}
    if not isinstance(retries, dict):
        result.error(f"{where}.retries", "retries must be a mapping with max_attempts")
        return
    attempts = retries.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        result.error(f"{where}.retries.max_attempts", "max_attempts must be an integer 1-100")
    for key in ("delay", "max_delay", "jitter"):
        if key in retries and not _positive_number(retries[key], allow_zero=True):
            result.error(f"{where}.retries.{key}", f"{key} must be a number of seconds >= 0")
    if "backoff" in retries and not (
        _positive_number(retries["backoff"]) and retries["backoff"] >= 1
    ):
        result.error(f"{where}.retries.backoff", "backoff must be a number >= 1")


def _validate_shell(step: dict, where: str, result: Validation) -> None:
    command = step.get("command")
    is_argv = isinstance(command, list) and command and all(isinstance(c, str) for c in command)
    if not (is_argv or (isinstance(command, str) and command.strip())):
        result.error(f"{where}.command", "a shell step needs a command (a string or a list)")
    env = step.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) for k in env
    ):
        result.error(f"{where}.env", "env must map variable names to values")


def _validate_python(step: dict, where: str, result: Validation) -> None:
    target = step.get("callable")
    if not isinstance(target, str) or not CALLABLE_RE.match(target):
        result.error(f"{where}.callable", "a python step needs callable: module.function")


def _validate_http(step: dict, where: str, result: Validation) -> None:
    if not isinstance(step.get("url"), str) or not step["url"]:
        result.error(f"{where}.url", "an http step needs a url")
    if str(step.get("method", "GET")).upper() not in HTTP_METHODS:
        result.error(f"{where}.method", f"method must be one of {', '.join(HTTP_METHODS)}")
    expect = step.get("expect_status")
    if expect is not None:
        values = expect if isinstance(expect, list) else [expect]
        if not all(isinstance(v, int) and 100 <= v <= 599 for v in values):
            result.error(f"{where}.expect_status", "expect_status must be HTTP status codes")


def _validate_approval(step: dict, where: str, result: Validation) -> None:
    required = step.get("approvals_required", 1)
    if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= 100:
        result.error(f"{where}.approvals_required", "approvals_required must be an integer 1-100")
    if "allow_self_approval" in step and not isinstance(step["allow_self_approval"], bool):
        result.error(f"{where}.allow_self_approval", "allow_self_approval must be true or false")


def _validate_graph(steps: list, result: Validation) -> None:
    dag = graph.graph_of(steps)
    cycle = graph.find_cycle(dag)
    if cycle:
        result.error("steps", f"dependency cycle: {' -> '.join(cycle)}")
        return
    for index, step in enumerate(steps):
        where = f"steps[{index}]({step['id']})"
        upstream = graph.ancestors(dag, step["id"])
        for expression in graph.template_expressions(step):
            _validate_expression(expression, where, dag, upstream, result)


def _validate_expression(expression: str, where: str, dag, upstream: set, result) -> None:
    parts = expression.split(".")
    root = parts[0].strip()
    if root not in TEMPLATE_ROOTS:
        result.error(
            where,
            f"template {{{{ {expression} }}}}: unknown name {root!r}; "
            f"use {', '.join(TEMPLATE_ROOTS)}",
        )
    elif root == "steps":
        if len(parts) < 3 or parts[2] != "outputs":
            result.error(where, f"template {{{{ {expression} }}}}: use steps.<id>.outputs.<key>")
        elif parts[1] not in dag:
            result.error(where, f"template {{{{ {expression} }}}}: unknown step {parts[1]!r}")
        elif parts[1] not in upstream:
            result.error(
                where,
                f"template {{{{ {expression} }}}}: step {parts[1]!r} is not upstream of this step",
            )


def normalise_retries(step: dict) -> dict:
    retries = step.get("retries") or {}
    if isinstance(retries, int):
        retries = {"max_attempts": retries + 1}
    return {
        "max_attempts": int(retries.get("max_attempts", 1)),
        "delay": float(retries.get("delay", 1.0)),
        "backoff": float(retries.get("backoff", 2.0)),
        "max_delay": float(retries.get("max_delay", 300.0)),
        "jitter": float(retries.get("jitter", 0.1)),
    }


def step_kind(step: dict) -> str:
    return step.get("kind", "noop" if "command" not in step else "shell")


def nul_path(value, path: str) -> str | None:
    """Where a NUL character hides in a JSON value (PostgreSQL cannot store it), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path
            found = nul_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def validate_input(schema: dict | None, value) -> list[dict]:
    """JSON Schema validation of a run input; each error names the field."""
    where = nul_path(value, "input")
    if where:
        return [{"path": where, "message": "contains a NUL character, which cannot be stored"}]
    if not schema:
        return (
            []
            if isinstance(value, dict)
            else [{"path": "input", "message": "input must be an object"}]
        )
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(e.path)):
        path = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
        errors.append({"path": path, "message": err.message})
    return errors
