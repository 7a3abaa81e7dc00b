"""Tideline's settings: everything that varies between installations comes from the environment.

See README.md ("Configuration") for every variable, its default and an example.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from console.env import (
    database_from_url,
    email_from_env,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    redis_url_checked,
    secret_kept,
)
from tracing.ledger.retention_policy import retention_policy_parse

BASE_DIR = Path(__file__).resolve().parent.parent
TIDELINE_HOME = env_path("TIDELINE_HOME", default=BASE_DIR / ".tideline")


def _secret_key() -> str:
    """SECRET_KEY from the environment; else one generated once and kept in TIDELINE_HOME."""
    configured = env_str("SECRET_KEY")
    if configured:
        if len(configured) < 50:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long")
        return configured
    return secret_kept(TIDELINE_HOME / "secret_key", lambda: secrets.token_urlsafe(64))


def _required(name: str) -> str:
    value = env_str(name)
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Start Tideline through `python manage.py ...` (which provides "
            f"embedded services in try-out mode) or set {name}."
        )
    return value


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "console.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "console",
    "tracing.ingest",
    "tracing.flows",
    "tracing.alerts",
    "tracing.ledger",
    "replay",
]

MIDDLEWARE = [
    "console.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "console.middleware.AccessMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

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
                "console.access.navigation",
            ],
        },
    },
]

DATABASES = {"default": database_from_url("DATABASE_URL", _required("DATABASE_URL"))}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("TIDELINE_DB_CONN_MAX_AGE", default=60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A database that does not answer must fail fast (ingest then answers 503), not hang a worker.
# Statements are prepared only where the code asks for it (token and flow reads, see
# console.rows): Django's cursors bind on the client and never prepare, and with
# Django's default threshold (None) psycopg would prepare nothing even when asked.
DATABASES["default"]["OPTIONS"] = {
    "connect_timeout": env_int("TIDELINE_DB_CONNECT_TIMEOUT", default=5, minimum=1),
    "prepare_threshold": 2**31 - 1,
    **DATABASES["default"]["OPTIONS"],
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = redis_url_checked("REDIS_URL", _required("REDIS_URL"))
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The flow summarizer has its own queue, so its runs never wait behind a bulk replay's
# sends in the default one. Declared here, both are consumed by every worker started
# without -Q: `serve`, the benches and the tests' workers alike.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery", routing_key="celery"), Queue("flows", routing_key="flows"))
CELERY_TASK_ROUTES = {"tracing.flows.tasks.*": {"queue": "flows"}}
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "partitions-ahead": {
        "task": "tracing.ingest.tasks.partitions_ensure_task",
        "schedule": 3600.0,
    },
    "sender-activity-forget": {
        "task": "tracing.ingest.tasks.sender_activity_forget_task",
        "schedule": 3600.0,
    },
    "bulk-replays-sweep": {
        "task": "replay.tasks.bulk_replays_sweep_task",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "replays-sweep": {
        "task": "replay.tasks.replays_sweep_task",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "auto-replay-poll": {
        "task": "replay.tasks.auto_replay_poll_task",
        "schedule": 15.0,
        "options": {"expires": 15.0},
    },
    # The summarizer drains what ingest marked; a run that could not start within its
    # interval is dropped rather than queued behind the next one.
    "flows-summarize": {
        "task": "tracing.flows.tasks.flows_summarize_task",
        "schedule": 1.0,
        "options": {"expires": 2.0},
    },
    "flows-stalled": {
        "task": "tracing.flows.tasks.flows_stalled_task",
        "schedule": 15.0,
        "options": {"expires": 15.0},
    },
    # One sequencer at a time (an advisory lock); a run that could not start in time is dropped.
    "ledger-sequence": {
        "task": "tracing.ledger.tasks.ledger_sequence_task",
        "schedule": 1.0,
        "options": {"expires": 2.0},
    },
    # A checkpoint whenever the log grew: at most 30 s after an entry, never a minute.
    "ledger-checkpoint": {
        "task": "tracing.ledger.tasks.ledger_checkpoint_task",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    # Payloads past their system's retention, and span partitions past theirs.
    "ledger-retention": {
        "task": "tracing.ledger.tasks.retention_run_task",
        "schedule": 86400.0,
    },
    # Export jobs a dead worker left behind are queued again.
    "ledger-exports-sweep": {
        "task": "tracing.ledger.tasks.ledger_exports_sweep_task",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    "ledger-verify": {
        "task": "tracing.ledger.tasks.ledger_verify_task",
        "schedule": 86400.0,
    },
    # A few indexed queries per scheduled or counted definition: every 15 s, a silence shows
    # within seconds of its grace running out (and a fresh console's within its first minute).
    "flows-missing": {
        "task": "tracing.flows.tasks.flows_missing_task",
        "schedule": 15.0,
        "options": {"expires": 15.0},
    },
    # Rules against the summary tables; also retries notifications a dead worker left.
    "alerts-evaluate": {
        "task": "tracing.alerts.tasks.alerts_evaluate_task",
        "schedule": float(env_int("TIDELINE_ALERT_EVALUATE_SECONDS", default=30, minimum=1)),
        "options": {"expires": 30.0},
    },
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "console.access.RoleBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
# Repeated failed logins for one account or from one address within the window are refused.
LOGIN_FAILURE_LIMIT = env_int("TIDELINE_LOGIN_FAILURE_LIMIT", default=5, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("TIDELINE_LOGIN_FAILURE_WINDOW", default=900, minimum=1)

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", default="UTC") or "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = TIDELINE_HOME / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# TIDELINE_HTTPS, not DEBUG, decides the transport security: an HTTPS deployment behind a
# proxy still gets secure cookies, redirects and HSTS when someone turns DEBUG on.
TIDELINE_HTTPS = env_bool("TIDELINE_HTTPS", default=False)
SESSION_COOKIE_SECURE = TIDELINE_HTTPS
CSRF_COOKIE_SECURE = TIDELINE_HTTPS
SECURE_SSL_REDIRECT = TIDELINE_HTTPS
SECURE_HSTS_SECONDS = 31_536_000 if TIDELINE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = TIDELINE_HTTPS
SECURE_HSTS_PRELOAD = TIDELINE_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
if TIDELINE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("TIDELINE_SESSION_SECONDS", default=8 * 3600, minimum=60)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "console.authentication.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["console.access.MatrixPermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "console.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tideline API",
    "DESCRIPTION": "Flows, dead letters, replays and the ledger, for people with a personal token.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files: the console never loads code from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["console.access.MatrixPermission"],
    # Dead letters, replays and bulk jobs each have a `state`; name the dead letter's set.
    "ENUM_NAME_OVERRIDES": {"DeadLetterStateEnum": "tracing.ingest.models.DeadLetter.State"},
    "SERVE_AUTHENTICATION": [
        "console.authentication.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

METRICS_TOKEN = env_str("TIDELINE_METRICS_TOKEN")

# Ingest
TIDELINE_SPAN_RETENTION_DAYS = env_int("TIDELINE_SPAN_RETENTION_DAYS", default=30, minimum=1)
TIDELINE_PARTITION_DAYS_AHEAD = 7
TIDELINE_CORRELATION_KEYS = env_list(
    "TIDELINE_CORRELATION_KEYS", default=["correlation.id", "messaging.message.conversation_id"]
)
TIDELINE_BUSINESS_KEY_PREFIX = (
    env_str("TIDELINE_BUSINESS_KEY_PREFIX", default="business.") or "business."
)
TIDELINE_MESSAGE_ID_KEY = "messaging.message.id"

# Replay
# Address prefixes a replay may reach besides the destinations an admin declares
# ("http://wms.internal/", "amqp://broker/%2F/queue/orders", "redis://cache/0/stream/stock").
TIDELINE_REPLAY_ALLOWED_DESTINATIONS = env_list("TIDELINE_REPLAY_ALLOWED_DESTINATIONS", default=[])
TIDELINE_REPLAY_TIMEOUT_SECONDS = env_int("TIDELINE_REPLAY_TIMEOUT_SECONDS", default=10, minimum=1)
# Where AMQP and Redis replays go when a dead letter names no broker of its own.
TIDELINE_REPLAY_AMQP_URL = env_str("TIDELINE_REPLAY_AMQP_URL") or env_str("TIDELINE_AMQP_URL")
TIDELINE_REPLAY_REDIS_URL = env_str("TIDELINE_REPLAY_REDIS_URL") or REDIS_URL

# Payloads as support sees them (roles without view_unmasked). JSON: the values at these
# paths become •••  ("a.b" a nested key, "*" any one key or element, "**" any depth,
# "lines[*].price" array elements). Any other content type is hidden whole unless listed in
# TIDELINE_MASK_UNMASKED_TYPES ("text/csv", "text/*").
TIDELINE_MASK_JSON_PATHS = env_list(
    "TIDELINE_MASK_JSON_PATHS",
    default=["customer", "**.email", "**.phone", "**.address", "**.iban"],
)
TIDELINE_MASK_UNMASKED_TYPES = env_list("TIDELINE_MASK_UNMASKED_TYPES", default=[])
# Bounds a request body both as sent and once inflated: a gzip bomb stops at this size.
TIDELINE_INGEST_MAX_BYTES = env_int(
    "TIDELINE_INGEST_MAX_BYTES", default=16 * 1024 * 1024, minimum=1024
)
TIDELINE_INGEST_STATEMENT_TIMEOUT_MS = env_int(
    "TIDELINE_INGEST_STATEMENT_TIMEOUT_MS", default=15_000, minimum=100
)

# Alerts
# Hosts a webhook channel may post to besides those an admin lists ("hooks.slack.com",
# ".webhook.office.com" for any subdomain, "127.0.0.1:8080" for one port); separate from replay's.
TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = env_list("TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS", default=[])
TIDELINE_ALERT_WEBHOOK_TIMEOUT_SECONDS = env_int(
    "TIDELINE_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=10, minimum=1
)
# The first retry waits about this long, each next one twice as long, at most an hour.
TIDELINE_ALERT_RETRY_BASE_SECONDS = env_float(
    "TIDELINE_ALERT_RETRY_BASE_SECONDS", default=10.0, minimum=0.01
)
# Where links in notifications point: the console's address as its users reach it.
TIDELINE_BASE_URL = (env_str("TIDELINE_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
_EMAIL = email_from_env()
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL["EMAIL_HOST"]
EMAIL_PORT = _EMAIL["EMAIL_PORT"]
EMAIL_HOST_USER = _EMAIL["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _EMAIL["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = _EMAIL["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _EMAIL["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = _EMAIL["EMAIL_TIMEOUT"]
DEFAULT_FROM_EMAIL = _EMAIL["DEFAULT_FROM_EMAIL"]
# Ledger
# The Ed25519 key that signs checkpoints, in signed-note form (`manage.py ledger keygen`);
# unset only in try-out mode, where one is made once in TIDELINE_HOME.
TIDELINE_SIGNING_KEY = env_str("TIDELINE_SIGNING_KEY")
# Off-host copies of every checkpoint: POSTed to a webhook and/or written to a directory
# another system collects.
TIDELINE_WITNESS_URL = env_str("TIDELINE_WITNESS_URL")
TIDELINE_WITNESS_DIR = env_str("TIDELINE_WITNESS_DIR")
# Entries per sequencer transaction: what a batch costs besides its entries (the queue's
# read, the frontier, the second connection) weighs less in larger ones.
TIDELINE_LEDGER_BATCH = env_int("TIDELINE_LEDGER_BATCH", default=50_000, minimum=1)
# Where export bundles are written and served from (auditors and admins download them).
TIDELINE_EXPORT_DIR = env_path("TIDELINE_EXPORT_DIR", default=TIDELINE_HOME / "media" / "exports")
# How long payloads are kept, per system: "default=90d,QMS=3650d,WMS=30d" (days). Older
# payloads are pruned from records, dead letters and raw bodies; ledger entries keep their
# digests, so every proof and every bundle still verifies.
TIDELINE_PAYLOAD_RETENTION = retention_policy_parse(
    env_str("TIDELINE_PAYLOAD_RETENTION", default="default=90d") or "default=90d"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "console.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stderr"], "level": env_str("LOG_LEVEL", default="INFO") or "INFO"},
    "loggers": {
        # Our request log replaces Django's; its 4xx/5xx lines would repeat each request.
        "django.request": {"level": "ERROR", "propagate": True},
        "django.server": {"level": "WARNING", "propagate": True},
        "httpx": {"level": "WARNING", "propagate": True},
    },
}
