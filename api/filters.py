"""Query filters of the list endpoints (django-filter)."""

from django.db.models import F, Q
from django.db.models.expressions import RawSQL
from django_filters import rest_framework as filters
from django_filters.constants import EMPTY_VALUES
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

from api import quick
from runs import selectors
from runs.status import RunStatus, Trigger

TRUE = ("true", "True", "1")
FALSE = ("false", "False", "0")


class ChoiceInFilter(filters.BaseInFilter, filters.ChoiceFilter):
    """A comma list of allowed values: `?status=failed,cancelled`."""


class NullsLastOrdering(filters.OrderingFilter):
    """`sort=field` or `sort=-field` (comma list allowed); empty values sort last, and the
    primary key breaks ties so pages never overlap."""

    def get_ordering_value(self, param):
        name = super().get_ordering_value(param)
        if name.startswith("-"):
            return F(name[1:]).desc(nulls_last=True)
        return F(name).asc(nulls_last=True)

    def filter(self, qs, value):
        if value in EMPTY_VALUES:
            return qs
        params = [param for param in value if param not in EMPTY_VALUES]
        tiebreak = "-pk" if params and params[0].startswith("-") else "pk"
        return qs.order_by(*[self.get_ordering_value(p) for p in params], tiebreak)


class RunFilter(filters.FilterSet):
    status = ChoiceInFilter(choices=RunStatus.choices, help_text="comma list of statuses")
    workflow = filters.CharFilter(method="filter_workflow", help_text="workflow name")
    trigger = ChoiceInFilter(choices=Trigger.choices, help_text="comma list of triggers")
    created_by = filters.CharFilter(field_name="created_by__username", help_text="username")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    q = filters.CharFilter(
        field_name="id", lookup_expr="startswith", max_length=32, help_text="run id prefix"
    )
    sort = NullsLastOrdering(
        fields=(
            ("created_at", "created_at"),
            ("started_at", "started_at"),
            ("finished_at", "finished_at"),
            ("status", "status"),
            ("duration_ms", "duration"),
        ),
        help_text="created_at, started_at, finished_at, status or duration; '-' for "
        "descending (default -created_at)",
    )

    class Meta:
        model = selectors.Run
        fields = []

    def filter_workflow(self, queryset, name, value):
        return runs_of_workflow(queryset, value)

    @classmethod
    def quick(cls, params, queryset):
        """The common lists (`status` and `workflow`, nothing else) filtered without
        building the filter form, which costs more than the page: the queryset the form
        would give, or None when the parameters need the form (see `quick.conditions`)."""
        found = quick.conditions(params)
        if found is None:
            return None
        statuses, name = found
        if statuses is not None:
            queryset = queryset.filter(status__in=statuses)
        if name is not None:
            queryset = runs_of_workflow(queryset, name)
        return queryset


def runs_of_workflow(queryset, name: str):
    """On the run's own workflow column (names are unique), so the database reads the runs
    by their (workflow, status, created_at) index instead of joining workflows by name."""
    return queryset.filter(workflow_id=RawSQL(WORKFLOW_ID_SQL, [name]))


WORKFLOW_ID_SQL = f"SELECT id FROM {selectors.Workflow._meta.db_table} WHERE name = %s"


class RunFilterBackend(DjangoFilterBackend):
    """RunFilter, through its shortcut where it applies."""

    def filter_queryset(self, request, queryset, view):
        quick = RunFilter.quick(request.query_params, queryset)
        return super().filter_queryset(request, queryset, view) if quick is None else quick


def runs_matching(conditions: dict, queryset=None):
    """The runs a bulk action's `filter` selects; unknown keys are refused, so a typo can
    never select every run."""
    unknown = sorted(set(conditions) - set(RunFilter.base_filters))
    if unknown:
        raise ValidationError(
            {
                "filter": [
                    f"unknown filter {', '.join(unknown)}; use {', '.join(RunFilter.base_filters)}"
                ]
            }
        )
    for key, value in conditions.items():
        values = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            message = f"{key} must be a value or a list of values, not {type(value).__name__}"
            raise ValidationError({"filter": [message]})
    data = {
        key: ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        for key, value in conditions.items()
        if value is not None
    }
    filterset = RunFilter(
        data=data, queryset=selectors.run_queryset() if queryset is None else queryset
    )
    if not filterset.is_valid():
        raise ValidationError({"filter": filterset.errors})
    return filterset.qs


class WorkflowFilter(filters.FilterSet):
    q = filters.CharFilter(
        method="filter_q", max_length=200, help_text="name or description contains"
    )
    has_schedule = filters.ChoiceFilter(
        choices=[(v, v) for v in (*TRUE, *FALSE)],
        method="filter_has_schedule",
        help_text="true or false",
    )
    sort = NullsLastOrdering(
        fields=(
            ("name", "name"),
            ("created_at", "created_at"),
            ("updated_at", "updated_at"),
            ("last_run_at", "last_run_at"),
        ),
        help_text="name, created_at, updated_at or last_run_at; '-' for descending",
    )

    class Meta:
        model = selectors.Workflow
        fields = []

    def filter_q(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))

    def filter_has_schedule(self, queryset, name, value):
        return selectors.workflows_with_schedule(queryset, value in TRUE)


class ApprovalFilter(filters.FilterSet):
    workflow = filters.CharFilter(field_name="run__workflow__name", help_text="workflow name")
    run_id = filters.CharFilter(field_name="run_id")

    class Meta:
        model = selectors.StepRun
        fields = []
