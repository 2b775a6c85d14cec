"""trellis run start|bulk|get|list|cancel|resume|rerun|logs|approve|reject"""

import getpass
import json
import math
import os
import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from runs import selectors, services
from runs.cli import TrellisCommand, parse_json_arg, storable
from runs.engine.errors import InvalidInput
from runs.models import Run, RunEvent, StepRun
from runs.status import RUN_TERMINAL, RunStatus, Trigger
from workflows.definitions import strict_json

WATCH_POLL_SECONDS = 0.2
MAX_COMMENT = 10_000  # as the API takes
MAX_ATTEMPT = 2**31 - 1
MAX_OFFSET = 2**63 - 1
MAX_GRACE_SECONDS = 3600
EXIT_CODES = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.PARTIALLY_SUCCEEDED: 0,
    RunStatus.FAILED: 1,
    RunStatus.INVALID: 1,
    RunStatus.CANCELLED: 2,
}


def cli_user():
    """The CLI acts as $TRELLIS_USER (default: the login name), created on first use."""
    name = os.environ.get("TRELLIS_USER") or getpass.getuser() or "cli"
    user, _ = get_user_model().objects.get_or_create(username=name[:150])
    return user


class Command(TrellisCommand):
    help = "Start, inspect, watch and manage runs."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        p = sub.add_parser("start", help="start one run")
        p.add_argument("workflow")
        p.add_argument("--input", default=None, help="run input as JSON")
        p.add_argument("--params", default=None, help="params as JSON")
        p.add_argument("--start-at", default=None, help="ISO datetime to start at")
        p.add_argument("--idempotency-key", default=None)
        p.add_argument("--watch", action="store_true", help="follow until the run finishes")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("bulk", help="start many runs; validation is all-or-nothing")
        p.add_argument("workflow")
        p.add_argument("inputs", nargs="*", help="inputs as JSON, one per argument")
        p.add_argument("--from-file", default=None, help="JSONL file, one input per line")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("get", help="show a run and its steps")
        p.add_argument("run_id")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("list", help="list runs, newest first")
        p.add_argument("--status", default=None, help="comma list of statuses")
        p.add_argument("--workflow", default=None)
        p.add_argument("--trigger", default=None)
        p.add_argument("--limit", type=int, default=20)
        p.add_argument("--offset", type=int, default=0)
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("cancel", help="cancel a run")
        p.add_argument("run_id")
        p.add_argument(
            "--grace", type=float, default=None, help="seconds between SIGTERM and SIGKILL"
        )
        p.add_argument("--wait-for-running", action="store_true", help="let running steps finish")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("resume", help="re-run failed and cancelled steps of a run")
        p.add_argument("run_id")
        p.add_argument("--watch", action="store_true")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("rerun", help="run a step and everything downstream again")
        p.add_argument("run_id")
        p.add_argument("--from", dest="from_step", required=True)
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--watch", action="store_true")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("logs", help="print a run's logs")
        p.add_argument("run_id")
        p.add_argument("step", nargs="?")
        p.add_argument("--attempt", type=int, default=None)
        p.add_argument("--follow", "-f", action="store_true")

        for name in ("approve", "reject"):
            p = sub.add_parser(name, help=f"{name} a step waiting for approval")
            p.add_argument("run_id")
            p.add_argument("step")
            p.add_argument("--comment", default="")
            p.add_argument("--json", action="store_true")

    # --- start ---------------------------------------------------------------------------

    def handle_start(self, workflow, input, params, start_at, idempotency_key, watch, json, **_):
        value = parse_json_arg(input) if input is not None else {}
        params_value = parse_json_arg(params, "--params") if params is not None else None
        if params_value is not None:
            storable(params_value, "params")
        key_limit = Run._meta.get_field("idempotency_key").max_length
        if idempotency_key and len(idempotency_key) > key_limit:
            raise CommandError(f"--idempotency-key is longer than {key_limit} characters")
        when = None
        if start_at:
            try:
                when = parse_datetime(start_at)
            except ValueError:  # well formed, but no such date
                when = None
            if when is None:
                raise CommandError(f"--start-at {start_at[:60]!r} is not an ISO datetime")
            if timezone.is_naive(when):
                when = timezone.make_aware(when)
        with transaction.atomic():  # a refused start leaves no CLI user behind either
            run, created = services.run_start(
                workflow=workflow,
                input=value,
                params=params_value,
                trigger=Trigger.CLI,
                user=cli_user(),
                start_at=when,
                idempotency_key=idempotency_key,
            )
        if json and not watch:
            return self.print_json({"run_id": run.pk, "status": run.status, "created": created})
        self.stdout.write(
            f"run {run.pk} {'started' if created else 'exists'} ({run.workflow.name}, {run.status})"
        )
        if watch:
            self._watch(run.pk, as_json=json)

    def handle_bulk(self, workflow, inputs, from_file, json, **_):
        values, origins = [], []
        if from_file:
            for number, value in _read_jsonl(from_file):
                values.append(value)
                origins.append(f"{from_file} line {number}")
        for index, text in enumerate(inputs, start=1):
            values.append(parse_json_arg(text, f"argument {index}"))
            origins.append(f"argument {index}")
        if not values:
            raise CommandError("no inputs: pass --from-file inputs.jsonl or JSON arguments")
        try:
            with transaction.atomic():
                run_ids = services.run_bulk_start(workflow=workflow, inputs=values, user=cli_user())
        except InvalidInput as exc:
            index = exc.details.get("index")
            if index is None:
                raise
            first = exc.details["errors"][0]
            raise CommandError(
                f"{origins[index]}: {first['path']}: {first['message']} (nothing was created)"
            ) from None
        if json:
            return self.print_json({"run_ids": run_ids})
        self.stdout.write(f"{len(run_ids)} runs created")
        for run_id in run_ids:
            self.stdout.write(run_id)

    # --- read ----------------------------------------------------------------------------

    def handle_get(self, run_id, json, **_):
        run = services.run_get(run_id)
        detail = selectors.run_detail(run)
        if json:
            return self.print_json(detail)
        self.stdout.write(
            f"run {run.pk}  {run.workflow.name}  {run.status}"
            + (f"  ({run.reason}: {run.error})" if run.error else "")
        )
        self.stdout.write(
            f"created {run.created_at:%Y-%m-%d %H:%M:%S}  trigger {run.trigger}  "
            f"dag {run.dag_hash[:12]}"
            + (f"  duration {run.duration_ms} ms" if run.duration_ms is not None else "")
        )
        for step in detail["steps"]:
            duration = f"{step['duration_ms']} ms" if step["duration_ms"] is not None else ""
            extra = f"  {step['error']}" if step.get("error") else ""
            self.stdout.write(
                f"  {step['step_id']:<24} {step['status']:<17} "
                f"attempts {step['attempts']:<2} {duration:>10}{extra}"
            )

    def handle_list(self, status, workflow, trigger, limit, offset, json, **_):
        if not 0 <= offset <= MAX_OFFSET:
            raise CommandError(f"--offset must be from 0 to {MAX_OFFSET}")
        for option, given, choices in (
            ("--status", status, RunStatus.values),
            ("--trigger", trigger, Trigger.values),
        ):
            unknown = [v for v in (given or "").split(",") if v.strip() not in choices]
            if given and unknown:
                raise CommandError(
                    f"{option}: unknown {', '.join(map(repr, unknown))}; use {', '.join(choices)}"
                )
        filters = {"status": status, "workflow": workflow, "trigger": trigger}
        runs = selectors.run_list(filters=filters)[offset : offset + min(max(limit, 1), 1000)]
        rows = [selectors.run_summary(run) for run in runs]
        if json:
            return self.print_json(rows)
        for row in rows:
            self.stdout.write(
                f"{row['run_id']}  {row['workflow']:<24} {row['status']:<19} "
                f"{row['created_at'][:19]}  {row['trigger']}"
            )

    # --- change --------------------------------------------------------------------------

    def handle_cancel(self, run_id, grace, wait_for_running, json, **_):
        if grace is not None and not (math.isfinite(grace) and 0 <= grace <= MAX_GRACE_SECONDS):
            raise CommandError(f"--grace must be a number of seconds from 0 to {MAX_GRACE_SECONDS}")
        run = services.run_cancel(
            run_id=run_id, grace_seconds=grace, wait_for_running=wait_for_running
        )
        self._print_run(run, json)
        if run.status not in RUN_TERMINAL and not json:
            self.stdout.write("cancel requested: it ends cancelled when its running steps end")

    def handle_resume(self, run_id, watch, json, **_):
        run = services.run_resume(run_id=run_id)
        self._print_run(run, json and not watch)
        if watch:
            self._watch(run.pk, after=run.event_seq, as_json=json)

    def handle_rerun(self, run_id, from_step, dry_run, watch, json, **_):
        result = services.run_rerun(run_id=run_id, from_step=from_step, dry_run=dry_run)
        if dry_run:
            if json:
                return self.print_json({"run_id": run_id, "steps": result})
            self.stdout.write("would run: " + ", ".join(result))
            return
        self._print_run(result, json and not watch)
        if watch:
            self._watch(result.pk, after=result.event_seq, as_json=json)

    def handle_approve(self, run_id, step, comment, json, **_):
        self._decide(services.step_approve, run_id, step, comment, json)

    def handle_reject(self, run_id, step, comment, json, **_):
        self._decide(services.step_reject, run_id, step, comment, json)

    def _decide(self, service, run_id, step, comment, json):
        if len(comment) > MAX_COMMENT:
            raise CommandError(f"--comment is longer than {MAX_COMMENT} characters")
        with transaction.atomic():
            step_run = service(run_id=run_id, step_id=step, user=cli_user(), comment=comment)
        verdict = "rejected" if step_run.status == "failed" else "approved"
        if json:
            return self.print_json(
                {"step_id": step, "status": verdict, "step_status": step_run.status}
            )
        self.stdout.write(f"{step} {verdict} (step is {step_run.status})")

    def _print_run(self, run, as_json):
        if as_json:
            return self.print_json({"run_id": run.pk, "status": run.status})
        self.stdout.write(f"run {run.pk} {run.status}")

    # --- logs and watch ------------------------------------------------------------------

    def handle_logs(self, run_id, step, attempt, follow, **_):
        if attempt is not None and not 1 <= attempt <= MAX_ATTEMPT:
            raise CommandError(f"--attempt must be from 1 to {MAX_ATTEMPT}")
        run = services.run_get(run_id)
        steps = StepRun.objects.filter(run=run)
        if step:
            steps = steps.filter(step_id=step)
            if not steps.exists():
                raise CommandError(f"run {run_id} has no step {step!r}", returncode=4)
        positions: dict = {}
        while True:
            for chunk in selectors.new_log_chunks(run, step, attempt, positions):
                prefix = f"[{chunk.step_run.step_id}] " if not step else ""
                stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
                for line in chunk.text.splitlines(keepends=True):
                    stream.write(prefix + line)
                stream.flush()
            if not follow:
                return
            run.refresh_from_db(fields=["status"])
            if run.status in RUN_TERMINAL:
                follow = False  # one more pass picks up the last lines
            time.sleep(WATCH_POLL_SECONDS)

    def _watch(self, run_id: str, after: int = 0, as_json: bool = False) -> None:
        """Print transitions until the run ends; exit 0/1/2. Ctrl+C detaches."""
        try:
            status = self._follow_events(run_id, after, as_json)
        except KeyboardInterrupt:
            self.stderr.write(f"\ndetached; run {run_id} goes on (trellis run get {run_id})")
            sys.exit(130)
        self.stdout.write(f"run {run_id} {status}")
        sys.stdout.flush()
        sys.exit(EXIT_CODES.get(status, 1))

    def _follow_events(self, run_id: str, after: int, as_json: bool) -> str:
        while True:
            events = list(RunEvent.objects.filter(run_id=run_id, seq__gt=after).order_by("seq"))
            for event in events:
                after = event.seq
                self._print_event(run_id, event, as_json)
                if event.type == "run.status" and event.status in RUN_TERMINAL:
                    return event.status
            time.sleep(WATCH_POLL_SECONDS)

    def _print_event(self, run_id, event, as_json):
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "seq": event.seq,
                        "type": event.type,
                        "run_id": run_id,
                        "step_id": event.step_id or None,
                        "status": event.status,
                        "at": event.created_at.isoformat(),
                        **event.data,
                    }
                )
            )
            return
        at = timezone.localtime(event.created_at).strftime("%H:%M:%S.%f")[:-3]
        if event.type == "run.status":
            line = f"{at}  run {event.status}"
        elif event.type == "run.cancel":
            line = f"{at}  run cancel requested: running steps finish first"
        else:
            details = " ".join(f"{k}={v}" for k, v in event.data.items())
            line = f"{at}  {event.step_id:<24} {event.status:<17} {details}".rstrip()
        self.stdout.write(line)
        if event.status == "waiting_approval":
            self.stdout.write(
                f"          approve with: trellis run approve {run_id} {event.step_id}"
            )
        sys.stdout.flush()


def _read_jsonl(path: str) -> list[tuple[int, object]]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"no such file: {path}")
    values = []
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CommandError(f"{path} line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                values.append((number, strict_json(line)))
            except json.JSONDecodeError as exc:
                raise CommandError(f"{path} line {number}: not valid JSON: {exc.msg}") from None
            except ValueError as exc:
                raise CommandError(f"{path} line {number}: not valid JSON: {exc}") from None
    return values
