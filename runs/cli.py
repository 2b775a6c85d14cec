"""Shared pieces of the `trellis` commands: one error line on stderr, JSON output."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from runs.engine.errors import EngineError
from workflows.definitions import DefinitionError


class TrellisCommand(BaseCommand):
    """Commands with subcommands; every refusal becomes one line on stderr, exit 1."""

    requires_system_checks = []

    def run_from_argv(self, argv):
        self._called_from_command_line = True
        parser = self.create_parser(argv[0], argv[1])
        options = vars(parser.parse_args(argv[2:]))
        args = options.pop("args", ())
        try:
            self.execute(*args, **options)
        except CommandError as exc:
            self.stderr.write(f"error: {exc}")
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


def parse_json_arg(text: str, what: str = "--input"):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
