import copy

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from api.models import ApiToken
from api.recent import Recent

# Tokens this web worker has resolved lately, by key hash, each with its user. A hit saves
# the token lookup of every request. Entries live for `TRELLIS_TOKEN_CACHE_SECONDS`
# (default 5). A change to a token or a user made in this process (revoking in the admin,
# saving a user) empties it at once; one made in another process (another web worker,
# `trellis token revoke`) is seen within that time.
tokens = Recent(size=1024)


def forget_tokens(**_) -> None:
    """Drop every cached token: a token or a user changed. Also a signal receiver."""
    tokens.clear()


class TokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token <key>` or `Bearer <key>`; the key is looked up by its hash."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        try:
            header = authentication.get_authorization_header(request).split()
        except UnicodeEncodeError:  # only latin-1 can arrive in a header
            raise exceptions.AuthenticationFailed("invalid token") from None
        if not header or header[0].lower().decode(errors="replace") not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "malformed Authorization header: use 'Token <key>'"
            )
        try:
            key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid token") from None
        return self.authenticate_key(key)

    def authenticate_key(self, key: str):
        key_hash = ApiToken.hash_key(key)
        max_age = settings.TRELLIS_API["TOKEN_CACHE_SECONDS"]
        token = tokens.get(key_hash, max_age) if max_age > 0 else None
        if token is not None:
            check(token)
        else:
            token = ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
            check(token)
            now = timezone.now()
            if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
                token.last_used_at = now
            if max_age > 0:
                tokens.put(key_hash, token)
        # Each request gets its own copies: views may set attributes on either.
        token = copy.copy(token)
        user = token.user = copy.copy(token.user)
        return user, token

    def authenticate_header(self, request):
        return "Token"


def check(token: ApiToken | None) -> None:
    if token is None or token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("invalid or revoked token")
    if token.is_expired:
        raise exceptions.AuthenticationFailed("token expired")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("user inactive")
