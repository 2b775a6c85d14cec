"""trellis token create|list|revoke"""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone

from api.models import ApiToken
from api.units import parse_duration
from runs.cli import TrellisCommand

# A prefix this short could match the tokens of everyone ("trl_" is every token's start).
MIN_REVOKE_PREFIX = 8


def parse_scopes(values: list[str]) -> list[str]:
    scopes = []
    for value in values:
        for scope in value.split(","):
            scope = scope.strip()
            if scope not in ApiToken.SCOPES:
                raise CommandError(f"unknown scope {scope!r}; use {', '.join(ApiToken.SCOPES)}")
            if scope not in scopes:
                scopes.append(scope)
    return scopes


class Command(TrellisCommand):
    help = "Create, list and revoke API tokens."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        p = sub.add_parser("create", help="create a token; its key is printed once")
        p.add_argument("--user", required=True, help="username the token acts as")
        p.add_argument(
            "--scope",
            action="append",
            default=[],
            help="read, run or admin (repeat or comma list; default read)",
        )
        p.add_argument("--expires", default=None, help="lifetime such as 12h, 30d, 2w")
        p.add_argument("--name", default="", help="what the token is for")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("list", help="list tokens (never their keys)")
        p.add_argument("--user", default=None)
        p.add_argument("--all", action="store_true", help="include revoked and expired")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("revoke", help="revoke the token whose key starts with a prefix")
        p.add_argument("prefix")
        p.add_argument("--json", action="store_true")

    def handle_create(self, user, scope, expires, name, json, **_):
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"no user named {user!r}", returncode=4)
        scopes = parse_scopes(scope or ["read"])
        name_limit = ApiToken._meta.get_field("name").max_length
        if len(name) > name_limit:
            raise CommandError(f"--name is longer than {name_limit} characters")
        expires_at = None
        if expires:
            try:
                expires_at = timezone.now() + parse_duration(expires)
            except ValueError as exc:
                raise CommandError(f"--expires: {exc}") from None
        token, key = ApiToken.issue(user=account, scopes=scopes, name=name, expires_at=expires_at)
        if json:
            return self.print_json({**self._row(token), "key": key})
        self.stdout.write(key)
        self.stderr.write(
            f"token {token.prefix}… for {user} ({','.join(scopes)}"
            + (f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "")
            + "); the key is shown only now"
        )

    def handle_list(self, user, all, json, **_):
        tokens = ApiToken.objects.select_related("user").order_by("-created_at")
        if user:
            tokens = tokens.filter(user__username=user)
        if not all:
            tokens = tokens.filter(revoked_at__isnull=True)
        rows = [self._row(t) for t in tokens if all or not t.is_expired]
        if json:
            return self.print_json(rows)
        if not rows:
            self.stdout.write("no tokens; create one with: trellis token create --user <name>")
        for row in rows:
            self.stdout.write(
                f"{row['prefix']:<14} {row['user']:<16} {row['scopes']:<15} "
                f"{row['state']:<8} expires {row['expires_at'] or 'never':<26} "
                f"last used {row['last_used_at'] or 'never'}  {row['name']}"
            )

    def handle_revoke(self, prefix, json, **_):
        active = ApiToken.objects.select_related("user").filter(revoked_at__isnull=True)
        matches = list(active.filter(key_hash=ApiToken.hash_key(prefix)))  # the whole key
        whole_key = bool(matches)
        matches = matches or list(active.filter(prefix__startswith=prefix[:12]))
        if not matches:
            raise CommandError(f"no active token starts with {prefix!r}", returncode=4)
        if len(matches) > 1:
            raise CommandError(f"{len(matches)} tokens start with {prefix!r}; give more of the key")
        if not whole_key and len(prefix) < MIN_REVOKE_PREFIX:
            # "", "t" or "trl_" name whichever token happens to be the only one
            raise CommandError(
                f"give at least the first {MIN_REVOKE_PREFIX} characters of the key "
                "(trellis token list shows them)"
            )
        token = matches[0]
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        if json:
            return self.print_json(self._row(token))
        self.stdout.write(f"token {token.prefix}… of {token.user} revoked")

    @staticmethod
    def _row(token: ApiToken) -> dict:
        state = "revoked" if token.revoked_at else "expired" if token.is_expired else "active"
        return {
            "prefix": token.prefix,
            "user": token.user.get_username(),
            "name": token.name,
            "scopes": token.scopes,
            "state": state,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            "created_at": token.created_at.isoformat(),
        }
