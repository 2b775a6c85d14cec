"""Parse and validate workflow documents (SPEC §2). Errors name the field and the step."""

import datetime
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import referencing.exceptions
import yaml
from croniter import CroniterBadDateError, croniter

from workflows import graph

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}\Z")
STEP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z")
STEP_KINDS = ("shell", "python", "http", "approval", "respond", "noop")
CALLABLE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+\Z")
TEMPLATE_ROOTS = ("input", "params", "run", "steps")
OVERLAP = ("queue", "skip", "cancel_running")
CATCHUP = ("all", "latest", "none")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Documents and inputs nested deeper than this are refused: deeper values would only
# overflow the stack somewhere further on (validation, hashing, storing, rendering).
MAX_DEPTH = 100
# Durations a definition may give (timeouts, retry delays): at most 100 years, so adding
# one to a date never overflows.
MAX_SECONDS = 100 * 366 * 86400
MAX_BACKOFF = 100
SURROGATE_RE = re.compile("[\ud800-\udfff]")

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
        document = plain_json(yaml.safe_load(text))
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
    except RecursionError:
        raise DefinitionError(
            [{"path": "", "message": f"nested deeper than {MAX_DEPTH} levels"}]
        ) from None
    if not isinstance(document, dict):
        raise DefinitionError([{"path": "", "message": "a workflow document must be a mapping"}])
    return document


def plain_json(value):
    """A parsed YAML value as plain JSON: dates become ISO strings, integer, float, boolean
    and null keys become strings as JSON writes them; anything else JSON cannot hold (binary,
    sets, date keys, …) is a DefinitionError naming where it is."""

    def convert(item, path: str):
        if item is None or isinstance(item, bool | int | float | str):
            return item
        if isinstance(item, datetime.date):  # datetime too
            return str(item)
        if isinstance(item, list):
            return [convert(v, f"{path}[{i}]") for i, v in enumerate(item)]
        if isinstance(item, dict):
            result = {}
            for key, v in item.items():
                if not (key is None or isinstance(key, bool | int | float | str)):
                    message = f"key {key!r} is not a string"
                    raise DefinitionError([{"path": path.lstrip("."), "message": message}])
                name = key if isinstance(key, str) else json.dumps(key)
                result[name] = convert(v, f"{path}.{_path_key(name)}")
            return result
        message = f"a {type(item).__name__} value cannot be stored as JSON"
        raise DefinitionError([{"path": path.lstrip("."), "message": message}])

    return convert(value, "")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def strict_json(text: str | bytes):
    """JSON as the standard has it: no NaN or Infinity. ValueError (json.JSONDecodeError
    among them) says what is wrong, nesting too deep for the parser included."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nested too deeply (at most {MAX_DEPTH} levels)") from None


def dag_hash(document: dict) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate(document) -> Validation:
    result = Validation()
    if not isinstance(document, dict):
        result.error("", "a workflow document must be a mapping")
        return result
    problem = unstorable(document)
    if problem is not None:
        result.error(*problem)
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
            else:
                _validate_refs(schema, result)
    if "params" in document and not isinstance(document["params"], dict):
        result.error("params", "params must be a mapping of default values")
    mar = document.get("max_active_runs")
    if mar is not None and (isinstance(mar, bool) or not isinstance(mar, int) or mar < 1):
        result.error("max_active_runs", "max_active_runs must be an integer of at least 1")
    if document.get("overlap", "queue") not in OVERLAP:
        result.error("overlap", f"overlap must be one of {', '.join(OVERLAP)}")
    if "timeout" in document:
        _check_seconds(document["timeout"], "timeout", "timeout", result)
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
    if isinstance(http, dict) and str(http.get("method", "POST")).upper() not in HTTP_METHODS:
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
    elif not _cron_fires(cron):
        result.error("schedule.cron", f"{cron!r} never fires (no such date)")
    tz = schedule.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ValueError(tz)
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory of zones
        result.error("schedule.timezone", f"unknown timezone {tz!r}")
    if schedule.get("catchup", "latest") not in CATCHUP:
        result.error("schedule.catchup", f"catchup must be one of {', '.join(CATCHUP)}")
    if "input" in schedule and not isinstance(schedule["input"], dict):
        result.error("schedule.input", "schedule input must be a mapping")


def _cron_fires(cron: str) -> bool:
    """Whether a valid cron expression has a next tick (`0 0 31 2 *` has none)."""
    try:
        croniter(cron, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)).get_next(
            datetime.datetime
        )
    except (CroniterBadDateError, ValueError, OverflowError):
        return False
    return True


def _check_seconds(value, path: str, what: str, result: Validation, allow_zero=False) -> None:
    if not _positive_number(value, allow_zero):
        qualifier = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        result.error(path, f"{what} must be {qualifier}")
    elif value > MAX_SECONDS:
        result.error(path, f"{what} must be at most {MAX_SECONDS} seconds (100 years)")


def _validate_refs(schema: dict, result: Validation) -> None:
    """`$ref`s of an input schema point inside it: nothing is fetched, and each resolves."""
    for path, ref in _refs(schema):
        where = "input_schema" + (f".{path}" if path else "") + ".$ref"
        if not isinstance(ref, str) or not ref.startswith("#"):
            result.error(where, f"only local references (#/…) are allowed, not {ref!r}")
        elif (ref == "#" or ref.startswith("#/")) and not _pointer_resolves(schema, ref[1:]):
            result.error(where, f"{ref!r} points to nothing in input_schema")


def _refs(schema) -> list[tuple[str, object]]:
    found, todo = [], [(schema, "")]
    while todo:
        node, path = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef"):
                    found.append((path.lstrip("."), value))
                else:
                    todo.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            todo.extend((value, f"{path}[{i}]") for i, value in enumerate(node))
    return found


def _pointer_resolves(document, pointer: str) -> bool:
    node = document
    for token in pointer.split("/")[1:]:
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


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
    if not isinstance(kind, str) or kind not in STEP_KINDS:
        result.error(f"{where}.kind", f"unknown kind {kind!r}; use one of {', '.join(STEP_KINDS)}")
        kind = None
    deps = step.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        result.error(f"{where}.depends_on", "depends_on must be a list of step ids")
    else:
        for dep in deps:
            if dep not in ids:
                result.error(f"{where}.depends_on", f"unknown step {dep!r}")
            if dep == step.get("id"):
                result.error(f"{where}.depends_on", "a step cannot depend on itself")
    if "timeout" in step:
        _check_seconds(step["timeout"], f"{where}.timeout", "timeout", result)
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
    for key in ("delay", "max_delay"):
        if key in retries:
            _check_seconds(retries[key], f"{where}.retries.{key}", key, result, allow_zero=True)
    if "jitter" in retries and not (
        _positive_number(retries["jitter"], allow_zero=True) and retries["jitter"] <= 1
    ):
        result.error(f"{where}.retries.jitter", "jitter must be a fraction of the delay, 0 to 1")
    if "backoff" in retries and not (
        _positive_number(retries["backoff"]) and 1 <= retries["backoff"] <= MAX_BACKOFF
    ):
        result.error(
            f"{where}.retries.backoff", f"backoff must be a number from 1 to {MAX_BACKOFF}"
        )


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


def _path_key(key: str) -> str:
    """A mapping key as it appears in an error path: printable and short."""
    if key.isprintable() and len(key) <= 64 and not SURROGATE_RE.search(key):
        return key
    return ascii(key[:64])


def unstorable(
    value, path: str = "", max_depth: int = MAX_DEPTH, allow_nul: bool = False
) -> tuple[str, str] | None:
    """(path, problem) of the first part of a JSON value that cannot be stored or read back
    faithfully: a NUL character (PostgreSQL cannot hold it), an unpaired surrogate (not
    Unicode), a number that is not finite, a key that is not a string, nesting deeper than
    `max_depth`. None when the value is fine. Iterative: any depth is safe to check.
    `allow_nul` leaves NUL characters to a later, more specific check."""
    problem = _first_unstorable(value, path, max_depth, allow_nul)
    if problem is None:
        return None
    where, message = problem
    where = where.lstrip(".")
    return (where if len(where) <= 200 else f"{where[:80]}…{where[-80:]}"), message


def _first_unstorable(value, path, max_depth, allow_nul) -> tuple[str, str] | None:
    # Each entry carries its trail (parent trail, key or index); the path text is only
    # built for the one part that is wrong.
    todo = [(value, 0, None)]
    while todo:
        item, depth, trail = todo.pop()
        problem = None
        if isinstance(item, str):
            problem = _text_problem(item, allow_nul)
        elif isinstance(item, float):
            problem = None if math.isfinite(item) else "is not a finite number"
        elif isinstance(item, list):
            if depth >= max_depth:
                problem = f"is nested deeper than {max_depth} levels"
            else:
                todo.extend((v, depth + 1, (trail, i)) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            if depth >= max_depth:
                problem = f"is nested deeper than {max_depth} levels"
            children = []
            for key, v in item.items() if problem is None else ():
                if not isinstance(key, str):
                    problem = f"has a key that is not a string: {key!r}"
                elif text := _text_problem(key, allow_nul):
                    problem = f"has a key that {text}"
                if problem:
                    break
                children.append((v, depth + 1, (trail, key)))
            todo.extend(reversed(children))
        elif item is not None and not isinstance(item, bool | int):
            problem = f"a {type(item).__name__} is not a JSON value"
        if problem:
            return path + _trail_text(trail), problem
    return None


def _trail_text(trail) -> str:
    parts = []
    while trail is not None:
        trail, step = trail
        parts.append(f"[{step}]" if isinstance(step, int) else f".{_path_key(step)}")
    return "".join(reversed(parts))


def _text_problem(text: str, allow_nul: bool = False) -> str | None:
    if "\x00" in text and not allow_nul:
        return "contains a NUL character, which cannot be stored"
    if SURROGATE_RE.search(text):
        return "contains an unpaired surrogate (not valid Unicode), which cannot be stored"
    return None


def _error_order(error) -> list[tuple]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.path]


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def validate_input(schema: dict | None, value) -> list[dict]:
    """JSON Schema validation of a run input; each error names the field."""
    problem = unstorable(value, "input")
    if problem:
        return [{"path": problem[0], "message": problem[1]}]
    if not schema:
        return (
            []
            if isinstance(value, dict)
            else [{"path": "input", "message": "input must be an object"}]
        )
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = []
    try:
        found = sorted(validator.iter_errors(value), key=_error_order)
    except RecursionError:
        return [{"path": "input", "message": "input_schema recurses without end on this input"}]
    except referencing.exceptions.Unresolvable as exc:
        return [{"path": "input", "message": f"input_schema cannot be applied: {exc}"}]
    for err in found:
        path = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path)
        errors.append({"path": path, "message": err.message})
    return errors
