"""trellis bench: the engine measured with real django-q2 workers (see runs.bench)."""

import argparse
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from runs import bench


class Command(BaseCommand):
    help = (
        "Measure Trellis with real workers on a throwaway database: chain, fanout, runs, "
        "latency, bulk, api, memory and queries per transition."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--shape",
            default="all",
            help=f"comma list of {', '.join(bench.SHAPES)}, or all (the default)",
        )
        parser.add_argument("--repeat", type=int, default=3, help="runs per shape (median)")
        parser.add_argument("--workers", type=int, default=settings.WORKERS)
        parser.add_argument(
            "--scale", type=float, default=1.0, help="multiply every size (0.1 for a quick look)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, shape, repeat, workers, scale, json: bool, inner: bool, **options):
        if repeat < 1 or workers < 1 or not 0 < scale <= 10:
            raise CommandError("--repeat and --workers must be >= 1, --scale in (0, 10]")
        try:
            config = bench.Options(bench.parse_shapes(shape), repeat, workers, scale)
            result = bench.run_inside(config) if inner else bench.run(config)
        except bench.BenchError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(_json(result) if json or inner else bench.render(result))


def _json(result: dict) -> str:
    return json.dumps(result, indent=2, default=str)
