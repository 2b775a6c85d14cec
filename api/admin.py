from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from api.auth import forget_tokens
from api.models import ApiToken


class ApiTokenForm(forms.ModelForm):
    scope_list = forms.MultipleChoiceField(
        label="Scopes",
        choices=[(scope, scope) for scope in ApiToken.SCOPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="read: look; run: start, cancel, resume, approve; admin: everything",
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name", "expires_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["scope_list"] = sorted(self.instance.scope_set)
        else:
            self.initial.setdefault("scope_list", ["read"])

    def save(self, commit=True):
        chosen = self.cleaned_data["scope_list"]
        self.instance.scopes = ",".join(s for s in ApiToken.SCOPES if s in chosen)
        return super().save(commit)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are stored hashed: the key is shown once, in a message, when one is added."""

    form = ApiTokenForm
    list_display = ("prefix", "user", "name", "scopes", "state", "expires_at", "last_used_at")
    list_filter = ("scopes",)
    search_fields = ("prefix", "name", "user__username")
    raw_id_fields = ("user",)
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        fields = ["user", "name", "scope_list", "expires_at"]
        return fields if obj is None else fields + list(self.get_readonly_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("prefix", "user", "created_at", "last_used_at", "revoked_at")

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.revoked_at:
            return "revoked"
        return "expired" if token.is_expired else "active"

    def save_model(self, request, obj, form, change):
        key = None
        if not change:
            key = ApiToken.generate_key()
            obj.set_key(key)
        super().save_model(request, obj, form, change)
        if key:
            self.message_user(
                request,
                f"Token key for {obj.user} — copy it now, it is not shown again: {key}",
                messages.WARNING,
            )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        forget_tokens()  # an update() sends no signal
        self.message_user(request, f"{count} token(s) revoked")
