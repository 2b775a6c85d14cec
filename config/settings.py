"""Trellis settings: flat, read from the environment, with zero-setup local defaults.

Embedded default: SQLite (WAL) under var/, django-q2's ORM broker. Set DATABASE_URL and
REDIS_URL to switch to PostgreSQL and the django-q2 Redis broker.
"""

import os
import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TRELLIS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
VERSION = "0.1.0"
# Test sessions get their own database and queue names, so several can run at once.
TEST_SESSION = f"{os.getpid()}" if "pytest" in sys.modules else ""


def _secret_key() -> str:
    if key := env_str("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "workflows",
    "runs",
    "api",
    "config",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'trellis.sqlite3'}")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=None)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not understood: {exc}") from None
IS_SQLITE = _db["ENGINE"] == "django.db.backends.sqlite3"
if IS_SQLITE:
    # IMMEDIATE takes the write lock at BEGIN, so a web process and workers writing
    # together wait on the busy timeout instead of failing with "database is locked".
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{TEST_SESSION or 'main'}.sqlite3")}
elif TEST_SESSION:
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{TEST_SESSION}"}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker and live events ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
QUEUE_NAME = env_str(
    "TRELLIS_QUEUE_NAME", f"trellis-test-{TEST_SESSION}" if TEST_SESSION else "trellis"
)
WORKERS = env_int("TRELLIS_WORKERS", 2, minimum=1)

# Tuned as measured on a 2-core machine (SPEC §8): no result saving, the ORM broker rung,
# failing tasks acknowledged (Trellis retries steps itself), and a task timeout far above
# any step: step timeouts and leases are Trellis's own.
Q_CLUSTER = {
    "name": QUEUE_NAME,
    "workers": WORKERS,
    "recycle": 10_000,
    "timeout": 7 * 24 * 3600,
    "retry": 7 * 24 * 3600 + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": -1,
    "sync": False,
    "catch_up": False,
    # The ORM broker's pusher polls this often when no doorbell rings (runs.engine.doorbell):
    # on SQLite every pusher is on this machine and is rung, so the poll is only a fallback
    # (idle `trellis serve`: 5.1% of a core at 0.02 s, 1.7% at 0.25 s).
    "poll": env_float("TRELLIS_POLL", 0.25 if IS_SQLITE else 0.02, minimum=0.001),
    "bulk": 10 if IS_SQLITE else 20,
    "label": "Django Q2",
    "log_level": env_str("TRELLIS_Q_LOG_LEVEL", "WARNING"),
}
# Channels and daphne are not installed apps: there is no WebSocket endpoint yet (SPEC
# §5), and loading them (twisted, autobahn, cryptography) cost each of the ten processes
# of `trellis serve` about 25 MiB. The layer settings wait for those endpoints.
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    Q_CLUSTER["orm"] = "default"
    # Rung when a task arrives, polled as a fallback (runs.engine.doorbell).
    Q_CLUSTER["broker_class"] = "runs.engine.doorbell.RungORM"
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- engine ----------------------------------------------------------------------------
WORKFLOWS_DIR = Path(env_str("TRELLIS_WORKFLOWS_DIR", str(BASE_DIR / "examples")))
TRELLIS = {
    "LEASE_SECONDS": env_float("TRELLIS_LEASE_SECONDS", 30.0, minimum=1.0),
    "TICK_SECONDS": env_float("TRELLIS_TICK_SECONDS", 0.5, minimum=0.05),
    "MAX_CONCURRENT_RUNS": env_int("TRELLIS_MAX_CONCURRENT_RUNS", 100, minimum=1),
    "CANCEL_GRACE_SECONDS": env_float("TRELLIS_CANCEL_GRACE_SECONDS", 10.0),
    "REQUEUE_AFTER_SECONDS": env_float("TRELLIS_REQUEUE_AFTER_SECONDS", 60.0, minimum=1.0),
    "LOG_FLUSH_SECONDS": env_float("TRELLIS_LOG_FLUSH_SECONDS", 0.25, minimum=0.01),
    "MAX_LOG_BYTES": env_int("TRELLIS_MAX_LOG_BYTES", 50 * 1024 * 1024, minimum=1024),
    # At most this many broker tasks for the steps one step makes ready; each task keeps
    # claiming queued steps of the run until none is left.
    "FANOUT_TASKS": env_int("TRELLIS_FANOUT_TASKS", 16, minimum=1),
    # No-op steps a worker claims and finishes together.
    "BATCH_STEPS": env_int("TRELLIS_BATCH_STEPS", 16, minimum=1),
    # PostgreSQL: prepare frequent statements per connection (off behind a pooler that
    # hands one client several server connections).
    "PREPARE_STATEMENTS": env_bool("TRELLIS_PREPARE_STATEMENTS", True),
}

# --- auth, API ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TRELLIS_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.ScopePermission"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.RunPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "api.throttling.UserWindowThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("TRELLIS_THROTTLE_ANON", "120/min"),
        "user": env_str("TRELLIS_THROTTLE_USER", "100000/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser", "api.parsers.YAMLParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# How long a web worker reuses what it has read, to keep per-request work small:
# - a list's `count` when it is 1,000 or more (smaller counts are always exact), so it may
#   lag the table by up to this many seconds;
# - an API token's owner, scopes and state: a token revoked, expired or whose user was
#   deactivated in another process (the CLI, another web worker) may keep working for up to
#   this many seconds there. 0 turns either off.
TRELLIS_API = {
    "COUNT_CACHE_SECONDS": env_float("TRELLIS_COUNT_CACHE_SECONDS", 5.0),
    "TOKEN_CACHE_SECONDS": env_float("TRELLIS_TOKEN_CACHE_SECONDS", 5.0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Trellis API",
    "DESCRIPTION": "Run workflows (DAGs of steps) and manage their runs.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the package, so /api/v1/docs/ works without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.status.RunStatus",
        "StepStatusEnum": "runs.status.StepStatus",
        "TriggerEnum": "runs.status.Trigger",
        "DecisionEnum": ["approved", "rejected"],
    },
}

# `default` holds throttling counters (with Redis, api.throttling counts users in Redis
# itself); `cluster` holds django-q2's cluster stats, which the web process reads for
# /health, so it must be shared between processes.
if REDIS_URL:
    _shared_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
    }
    CACHES = {"default": _shared_cache, "cluster": _shared_cache}
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "cluster": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        },
    }
Q_CLUSTER["cache"] = "cluster"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# The admin's and Swagger UI's files are served by the app itself, no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("TRELLIS_LOG_LEVEL", "WARNING")},
}
