"""Request body parsers: JSON and YAML, both refusing bodies over DATA_UPLOAD_MAX_MEMORY_SIZE
with 413 (Django itself only checks that for form data)."""

import io

import yaml
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, JSONParser

from workflows.definitions import MAX_DEPTH, DefinitionError, plain_json, unstorable

MAX_YAML_NODES = 1_000_000
# A body wraps what it carries (an input inside {"inputs": [...]}) in a few more levels.
MAX_BODY_DEPTH = MAX_DEPTH + 5


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "too_large"


def read_body(stream, parser_context) -> bytes:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if stream is None:
        return b""
    request = (parser_context or {}).get("request")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request else 0
    except ValueError:
        declared = 0
    if limit is not None and declared > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    data = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
    return data


def checked(data, kind: str):
    """The parsed body, unless some part of it can be neither stored nor read back: nesting
    past MAX_BODY_DEPTH, numbers past the float range (1e999), unpaired surrogates ("\\ud800").
    NUL characters are left to validation, which names the field they are in."""
    problem = unstorable(data, max_depth=MAX_BODY_DEPTH, allow_nul=True)
    if problem:
        path, message = problem
        raise ParseError(f"{kind} parse error - {path or 'the body'} {message}")
    return data


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = read_body(stream, parser_context)
        try:
            data = super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise ParseError(
                f"JSON parse error - nested deeper than {MAX_BODY_DEPTH} levels"
            ) from None
        return checked(data, "JSON")


class YAMLParser(BaseParser):
    """A YAML body; dates become ISO strings so the result is plain JSON."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        body = read_body(stream, parser_context)
        try:
            data = yaml.safe_load(body.decode("utf-8"))
            if _expanded_nodes(data, {}) > MAX_YAML_NODES:
                raise ParseError("YAML document expands to too many nodes (aliases)")
            data = plain_json(data)  # a recursive alias recurses without end here
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ParseError(f"YAML parse error: {exc}") from None
        except DefinitionError as exc:
            raise ParseError(f"YAML parse error: {exc}") from None
        except (RecursionError, ValueError):
            raise ParseError("YAML parse error: nested too deeply or recursive") from None
        return checked(data, "YAML")


class XYAMLParser(YAMLParser):
    media_type = "application/x-yaml"


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"


def _expanded_nodes(value, memo: dict) -> int:
    """How many nodes the document has once aliases are expanded, counted without
    expanding them (shared objects are counted once per reference)."""
    if not isinstance(value, dict | list):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = 0  # a recursive alias counts as one node
        children = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(_expanded_nodes(child, memo) for child in children)
    return memo[key]


PARSERS = [LimitedJSONParser, YAMLParser, XYAMLParser, TextYAMLParser]
