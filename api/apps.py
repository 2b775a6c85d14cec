from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save

        from api import schema  # noqa: F401  (registers the token security scheme)
        from api.auth import forget_tokens

        # A token or a user changed in this process: cached tokens are read again.
        for model in ("api.ApiToken", settings.AUTH_USER_MODEL):
            post_save.connect(forget_tokens, sender=model, dispatch_uid=f"forget-tokens-{model}")
            post_delete.connect(forget_tokens, sender=model, dispatch_uid=f"forget-{model}")
