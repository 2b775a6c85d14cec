"""PostgreSQL: vacuum and analyze the step table by a fixed amount of change, not a share
of its size.

Every step row is updated three or four times within seconds of its insertion (queued,
running, finished), and none of those updates can stay on the same page without touching
an index (the status is in the partial indexes' conditions), so each leaves a dead row
version in the table and in its indexes. By default autovacuum waits for 20% of the table
to be dead: at a million step rows, 200,000 dead versions, which the claim and hand-out
scans step over. Queue tables are vacuumed by a fixed threshold instead. The run table's
statistics are refreshed the same way, so the share of active runs the planner sees
follows the load rather than the last analyze of a table of finished runs.
"""

from django.db import migrations

SETTINGS = {
    "StepRun": (
        "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
        "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000"
    ),
    "Run": "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000",
}
RESET = {
    "StepRun": (
        "autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, "
        "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold"
    ),
    "Run": "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold",
}


def alter(apps, schema_editor, action: str, options_by_model: dict) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for model, options in options_by_model.items():
        table = schema_editor.quote_name(apps.get_model("runs", model)._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} {action} ({options})")


def apply(apps, schema_editor):
    alter(apps, schema_editor, "SET", SETTINGS)


def revert(apps, schema_editor):
    alter(apps, schema_editor, "RESET", RESET)


class Migration(migrations.Migration):
    dependencies = [("runs", "0004_lean_run_indexes")]

    operations = [migrations.RunPython(apply, revert)]
