from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from api import errors, views_runs, views_steps, views_system, views_workflows

DOCS = {"authentication_classes": [], "permission_classes": [AllowAny]}

run = "runs/<str:run_id>"
step = f"{run}/steps/<str:step_id>"
workflow = "workflows/<slug:name>"

urlpatterns = [
    path("health", views_system.HealthView.as_view(), name="health"),
    path("system/info", views_system.SystemInfoView.as_view(), name="system-info"),
    path("system/purge", views_system.PurgeView.as_view(), name="system-purge"),
    path("dashboard", views_system.DashboardView.as_view(), name="dashboard"),
    path("search", views_system.SearchView.as_view(), name="search"),
    path("approvals", views_runs.ApprovalListView.as_view(), name="approvals"),
    # workflows
    path("workflows", views_workflows.WorkflowListView.as_view(), name="workflows"),
    path(
        "workflows/validate",
        views_workflows.WorkflowValidateView.as_view(),
        name="workflows-validate",
    ),
    path(workflow, views_workflows.WorkflowDetailView.as_view(), name="workflow"),
    path(
        f"{workflow}/validate",
        views_workflows.WorkflowNamedValidateView.as_view(),
        name="workflow-validate",
    ),
    path(f"{workflow}/runs", views_workflows.WorkflowRunsView.as_view(), name="workflow-runs"),
    path(
        f"{workflow}/runs/latest",
        views_workflows.WorkflowLatestRunView.as_view(),
        name="workflow-latest-run",
    ),
    path(
        f"{workflow}/dry-run", views_workflows.WorkflowDryRunView.as_view(), name="workflow-dry-run"
    ),
    # runs
    path("runs", views_runs.RunListView.as_view(), name="runs"),
    path("runs/bulk", views_runs.RunBulkView.as_view(), name="runs-bulk"),
    path("runs/bulk-cancel", views_runs.RunBulkCancelView.as_view(), name="runs-bulk-cancel"),
    path("runs/bulk-resume", views_runs.RunBulkResumeView.as_view(), name="runs-bulk-resume"),
    path("runs/calendar", views_runs.RunCalendarView.as_view(), name="runs-calendar"),
    path(run, views_runs.RunDetailView.as_view(), name="run"),
    path(f"{run}/cancel", views_runs.RunCancelView.as_view(), name="run-cancel"),
    path(f"{run}/resume", views_runs.RunResumeView.as_view(), name="run-resume"),
    path(f"{run}/rerun", views_runs.RunRerunView.as_view(), name="run-rerun"),
    path(f"{run}/outputs", views_steps.RunOutputsView.as_view(), name="run-outputs"),
    path(f"{run}/logs", views_steps.RunLogsView.as_view(), name="run-logs"),
    path(f"{run}/logs/export", views_steps.RunLogExportView.as_view(), name="run-logs-export"),
    path(f"{run}/events", views_steps.RunEventsView.as_view(), name="run-events"),
    path(f"{run}/steps", views_steps.StepListView.as_view(), name="run-steps"),
    path(step, views_steps.StepDetailView.as_view(), name="run-step"),
    path(f"{step}/log", views_steps.StepLogView.as_view(), name="run-step-log"),
    path(f"{step}/approve", views_steps.StepApproveView.as_view(), name="run-step-approve"),
    path(f"{step}/reject", views_steps.StepRejectView.as_view(), name="run-step-reject"),
    path(f"{step}/preview", views_steps.StepPreviewView.as_view(), name="run-step-preview"),
    path(f"{step}/profile", views_steps.StepProfileView.as_view(), name="run-step-profile"),
    # the API described, and browsable
    path("schema/", SpectacularAPIView.as_view(**DOCS), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", **DOCS), name="docs"),
    re_path(r"^.*$", errors.not_found, name="not-found"),
]
