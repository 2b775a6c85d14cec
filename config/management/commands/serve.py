"""trellis serve: the web server and the workers (with ticker and scheduler), one command.

HTTP is served by uWSGI (WSGI): on this stack a request costs ~0.5 ms through WSGI
against 4-6 ms through ASGI with the default middleware. The command checks its
arguments, then becomes `config.supervise`, a plain-Python parent of uWSGI and
`trellis worker` that stops both on Ctrl+C or SIGTERM.
"""

import os
import sys

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve Trellis: web server on --host:--port plus a django-q2 cluster and ticker."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("TRELLIS_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, help="default: $TRELLIS_PORT or 8000")
        parser.add_argument(
            "--web-workers",
            type=int,
            help="web worker processes (default: $TRELLIS_WEB_WORKERS or 2)",
        )
        parser.add_argument("--no-worker", action="store_true", help="web server only")

    def handle(self, host, port, web_workers, no_worker, **options):
        port = port if port is not None else _env_int("TRELLIS_PORT", 8000)
        web_workers = web_workers if web_workers is not None else _env_int("TRELLIS_WEB_WORKERS", 2)
        if not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port")
        if web_workers < 1:
            raise CommandError("--web-workers must be at least 1")
        self.stdout.write(
            f"Trellis on http://{host}:{port}/  (API /api/v1/, admin /admin/)  Ctrl+C stops it"
        )
        self.stdout.flush()
        args = [host, str(port), str(web_workers), "0" if no_worker else "1"]
        os.execv(sys.executable, [sys.executable, "-m", "config.supervise", *args])


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise CommandError(f"{name}={raw[:40]!r} is not a whole number") from None
