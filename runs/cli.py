"""Shared pieces of the `trellis` commands: one error line on stderr, JSON output."""

import argparse
import json
import sys
import types

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from runs.engine.errors import EngineError
from workflows.definitions import SURROGATE_RE, DefinitionError, strict_json, unstorable


class TrellisCommand(BaseCommand):
    """Commands with subcommands; every refusal becomes one line on stderr, exit 1."""

    requires_system_checks = []

    def run_from_argv(self, argv):
        self._called_from_command_line = True
        parser = self.create_parser(argv[0], argv[1])
        _one_line_usage_errors(parser)
        options = vars(parser.parse_args(argv[2:]))
        args = options.pop("args", ())
        try:
            _check_arguments(options)
            self.execute(*args, **options)
        except CommandError as exc:
            self.stderr.write(f"error: {_shortened(str(exc))}")
            sys.exit(exc.returncode)
        except KeyboardInterrupt:
            sys.exit(130)
        finally:
            connections.close_all()

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except EngineError as exc:
            raise CommandError(exc.message, returncode=_exit_code(exc)) from None
        except DefinitionError as exc:
            raise CommandError(str(exc)) from None

    def handle(self, *args, **options):
        handler = getattr(self, f"handle_{options['subcommand'].replace('-', '_')}")
        return handler(**options)

    def print_json(self, value) -> None:
        self.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _exit_code(exc: EngineError) -> int:
    return {404: 4, 409: 3, 403: 5}.get(exc.status, 1)


def _shortened(message: str, limit: int = 500) -> str:
    """An error line stays readable when it quotes a huge argument."""
    message = " ".join(message.splitlines())
    if len(message) <= limit:
        return message
    half = limit // 2 - 10
    return f"{message[:half]} … ({len(message) - 2 * half} characters) … {message[-half:]}"


def _one_line_usage_errors(parser) -> None:
    """A usage error is one `error:` line (and exit 2), for the command and its subcommands."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    todo = [parser]
    while todo:
        current = todo.pop()
        current.error = types.MethodType(error, current)
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())


def _check_arguments(options: dict) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates; nothing could
    match or store them."""
    for name, value in options.items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and SURROGATE_RE.search(text):
                shown = name.replace("_", "-")
                raise CommandError(f"{shown} {ascii(text[:60])} is not valid UTF-8 text")


def storable(value, what: str):
    """`value`, unless part of it cannot be stored (NUL, 1e999, too deep, …)."""
    problem = unstorable(value, what)
    if problem:
        raise CommandError(f"{problem[0]} {problem[1]}")
    return value


def parse_json_arg(text: str, what: str = "--input"):
    try:
        return strict_json(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None
