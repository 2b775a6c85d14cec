import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """An API token; only its SHA-256 is stored, the key is shown once at creation."""

    SCOPES = ("read", "run", "admin")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.CharField(
        max_length=50, default="read", help_text="comma list of read, run, admin"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user}, {self.scopes})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate_key() -> str:
        return "trl_" + secrets.token_urlsafe(32)

    def set_key(self, key: str) -> None:
        self.prefix = key[:12]
        self.key_hash = self.hash_key(key)

    @classmethod
    def issue(
        cls, *, user, scopes: list[str], name: str = "", expires_at=None
    ) -> tuple["ApiToken", str]:
        key = cls.generate_key()
        token = cls(user=user, name=name, scopes=",".join(scopes), expires_at=expires_at)
        token.set_key(key)
        token.save()
        return token, key

    @property
    def scope_set(self) -> set[str]:
        return {s for s in self.scopes.split(",") if s}

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and not self.is_expired
