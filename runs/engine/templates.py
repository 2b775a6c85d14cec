"""`{{ path.to.value }}` templates: dotted look-ups only, no code, never into a shell."""

import json
import re

TEMPLATE_RE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
WHOLE_RE = re.compile(r"^\s*\{\{\s*([^{}]*?)\s*\}\}\s*$")


class TemplateError(ValueError):
    pass


def resolve(expression: str, context: dict):
    value = context
    for part in expression.split("."):
        part = part.strip()
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def to_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(value, context: dict):
    """Render templates in strings nested anywhere in `value`. A string that is exactly
    one template keeps the value's type (useful in JSON bodies)."""
    if isinstance(value, str):
        whole = WHOLE_RE.match(value)
        if whole:
            return resolve(whole.group(1), context)
        return TEMPLATE_RE.sub(lambda m: to_text(resolve(m.group(1), context)), value)
    if isinstance(value, dict):
        return {
            render(k, context) if isinstance(k, str) else k: render(v, context)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def render_text(value, context: dict) -> str:
    return to_text(render(value, context))


def shell_script(command: str, context: dict) -> tuple[str, dict[str, str]]:
    """Turn templates in a shell string into quoted variable references.

    `echo {{ input.x }}` becomes `echo "${TRELLIS_ARG_1}"` with TRELLIS_ARG_1 in the
    environment, so the value is data to the shell, never syntax.
    """
    env: dict[str, str] = {}

    def substitute(match: re.Match) -> str:
        name = f"TRELLIS_ARG_{len(env) + 1}"
        env[name] = to_text(resolve(match.group(1), context))
        return '"${' + name + '}"'

    return TEMPLATE_RE.sub(substitute, command), env
