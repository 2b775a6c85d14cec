from django.conf import settings
from django.db import models


class Workflow(models.Model):
    """A named workflow; its definition is the current version's document."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    definition = models.JSONField()
    current_version = models.ForeignKey(
        "WorkflowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=500, blank=True, help_text="file path, api or admin")
    is_paused = models.BooleanField(default=False, help_text="paused workflows run no schedule")
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_scheduled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["next_run_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def steps(self) -> list[dict]:
        return self.definition.get("steps", [])

    @property
    def schedule(self) -> dict | None:
        return self.definition.get("schedule")


class WorkflowVersion(models.Model):
    """An immutable snapshot of a definition; runs point at the version they ran."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    dag_hash = models.CharField(max_length=64)
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="uniq_workflow_version")
        ]
        indexes = [models.Index(fields=["workflow", "dag_hash"])]

    def __str__(self) -> str:
        return f"{self.workflow.name} v{self.number} ({self.dag_hash[:8]})"
