"""trellis workflow list|show <name>|validate <file>|sync [dir]"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from runs.cli import TrellisCommand
from runs.scheduler import next_tick, schedule_of
from workflows import definitions
from workflows.models import Workflow
from workflows.services import workflow_sync


class Command(TrellisCommand):
    help = "List, show, validate and sync workflow definitions."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        p = sub.add_parser("list", help="list workflows")
        p.add_argument("--json", action="store_true")
        p = sub.add_parser("show", help="show one workflow")
        p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p = sub.add_parser("validate", help="validate a definition file")
        p.add_argument("file")
        p.add_argument("--json", action="store_true")
        p = sub.add_parser("sync", help="load every definition file of a directory")
        p.add_argument("directory", nargs="?")
        p.add_argument("--json", action="store_true")

    def handle_list(self, json=False, **_):
        rows = [
            {
                "name": wf.name,
                "steps": len(wf.steps),
                "version": wf.current_version.number if wf.current_version else None,
                "schedule": (schedule_of(wf) or {}).get("cron"),
                "description": wf.description,
            }
            for wf in Workflow.objects.select_related("current_version")
        ]
        if json:
            return self.print_json(rows)
        if not rows:
            self.stdout.write("no workflows; add files to examples/ and run: trellis workflow sync")
        for row in rows:
            sched = f"  cron {row['schedule']}" if row["schedule"] else ""
            self.stdout.write(
                f"{row['name']:<28} v{row['version']:<3} {row['steps']:>3} steps{sched}"
            )

    def handle_show(self, name, json=False, **_):
        wf = Workflow.objects.select_related("current_version").filter(name=name).first()
        if wf is None:
            raise CommandError(f"no workflow named {name!r}", returncode=4)
        if json:
            return self.print_json(
                {
                    "name": wf.name,
                    "version": wf.current_version.number,
                    "dag_hash": wf.current_version.dag_hash,
                    "definition": wf.definition,
                }
            )
        self.stdout.write(
            f"{wf.name}  v{wf.current_version.number}  {wf.current_version.dag_hash[:12]}"
        )
        if wf.description:
            self.stdout.write(wf.description)
        schedule = schedule_of(wf)
        if schedule:
            from django.utils import timezone

            self.stdout.write(
                f"schedule: {schedule['cron']} ({schedule.get('timezone', 'UTC')}), "
                f"next {next_tick(schedule, timezone.now()).isoformat()}"
            )
        self.stdout.write("steps:")
        for step in wf.steps:
            deps = ", ".join(step.get("depends_on") or []) or "-"
            self.stdout.write(f"  {step['id']:<24} {definitions.step_kind(step):<9} after {deps}")

    def handle_validate(self, file, json=False, **_):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"no such file: {file}")
        try:
            document = definitions.parse_document(path.read_bytes(), path.name)
            result = definitions.validate(document)
            errors, warnings = result.errors, result.warnings
        except definitions.DefinitionError as exc:
            errors, warnings = exc.errors, []
        if json:
            self.print_json({"valid": not errors, "errors": errors, "warnings": warnings})
        else:
            for w in warnings:
                self.stderr.write(f"warning: {w['path']}: {w['message']}")
            for e in errors:
                self.stderr.write(f"error: {e['path']}: {e['message']}")
            if not errors:
                self.stdout.write(f"{file}: valid")
        if errors:
            raise CommandError(f"{file}: {len(errors)} error(s)")

    def handle_sync(self, directory=None, json=False, **_):
        path = Path(directory) if directory else Path(settings.WORKFLOWS_DIR)
        if not path.is_dir():
            raise CommandError(f"no such directory: {path}")
        reports = workflow_sync(directory=path)
        if json:
            self.print_json(reports)
        else:
            for r in reports:
                if r["ok"]:
                    self.stdout.write(f"{r['workflow']:<28} {r['state']}")
                else:
                    for e in r["errors"]:
                        self.stderr.write(f"{r['file']}: {e['path']}: {e['message']}")
        bad = [r for r in reports if not r["ok"]]
        if bad:
            raise CommandError(f"{len(bad)} file(s) not loaded")
