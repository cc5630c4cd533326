"""understudy settings: everything comes from environment variables.

Embedded defaults (no services to install): SQLite, Channels' in-memory layer,
Celery on the in-memory transport with a worker thread inside the web process.
Full stack: set DATABASE_URL (PostgreSQL) and REDIS_URL (Celery broker + result
backend + channels-redis), and run one Celery worker per hypervisor queue.
"""
import os
import secrets
import stat
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(environ.Env().str("UNDERSTUDY_DATA_DIR", default=str(BASE_DIR / "var")))
# The data dir holds the database, the worker's SSH key and the generated secret key: owner only.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if DATA_DIR.stat().st_mode & 0o077 and DATA_DIR.stat().st_uid == os.getuid():
    DATA_DIR.chmod(0o700)

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]"]),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

DEBUG = env("DEBUG")
# "production": behind a TLS-terminating proxy; secure cookies, HSTS, the key only from the environment.
PROFILE = env.str("UNDERSTUDY_PROFILE", default="embedded")
if PROFILE not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"UNDERSTUDY_PROFILE={PROFILE!r}: use 'embedded' (the default) or 'production'")
if PROFILE == "production" and DEBUG:
    raise ImproperlyConfigured("DEBUG=on shows tracebacks and settings to anyone: not with UNDERSTUDY_PROFILE=production")

# Keys that were ever written in this repository, its docs or docker-compose.yml.
KNOWN_INSECURE_KEYS = {"change-me", "changeme", "secret", "understudy-dev-only-insecure-key-change-me"}


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` must not sign sessions outside debug, or None if it may."""
    if key in KNOWN_INSECURE_KEYS or "change-me" in key or key.startswith("django-insecure"):
        return "it is a published placeholder"
    if len(key) < 50 or len(set(key)) < 5:
        return "it is shorter than 50 characters or has fewer than 5 different characters"
    return None


def _generated_secret_key(path: Path) -> str:
    """The embedded profile's key: random, made once, kept in the data dir readable by the owner only."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(64)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if PROFILE == "production":
        raise ImproperlyConfigured("SECRET_KEY is not set: the production profile takes the key from the "
                                   "environment only (generate one with "
                                   "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`)")
    SECRET_KEY = _generated_secret_key(DATA_DIR / "secret_key")
elif not DEBUG and (problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(f"refusing to start with an insecure SECRET_KEY ({problem}) while DEBUG is off: "
                               "set a random key of 50+ characters, or unset SECRET_KEY to let the embedded "
                               "profile generate one in the data dir")

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])


def allowed_origins(explicit: list[str], hosts: list[str]) -> list[str]:
    """Origins a WebSocket may come from (Channels' OriginValidator patterns).

    Never "anything": a "*" is refused in the explicit list and dropped from the hosts
    the default is derived from, so ``ALLOWED_HOSTS="*"`` alone lets no browser page connect.
    """
    if "*" in explicit:
        raise ImproperlyConfigured("UNDERSTUDY_ALLOWED_ORIGINS must list origins (e.g. https://understudy.example); "
                                   "'*' would let any web page act with a visitor's session")
    return explicit or [h for h in hosts if h and "*" not in h]


UNDERSTUDY_ALLOWED_ORIGINS = allowed_origins(env.list("UNDERSTUDY_ALLOWED_ORIGINS", default=[]), ALLOWED_HOSTS)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: the docs page loads nothing from elsewhere
    # Domain apps, bottom to top: each imports only the ones above it in this list
    # (tests/architecture/test_layering.py enforces it).
    "accounts",
    "inventory",
    "runbooks",
    "incidents",
    "rehearsals",
    "steps",
    "reports",
    "workers",
    "understudy",  # the project itself: its management commands (serve, demo) wire everything together
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "rehearsals.audit.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "understudy.urls"
ASGI_APPLICATION = "understudy.asgi.application"

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
                "accounts.roles.roles_context",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'understudy.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The in-process worker thread writes while the web serves: wait for the lock
    # instead of failing, and let readers proceed during writes (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    })
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "incidents:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

# The REST API (/api/v1/, understudy/api/): a personal token (accounts.api) or the browser's session (with its
# CSRF token); reading needs the ops or managers role, everything else ops (accounts.roles). JSON in and out.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api.TokenAuthentication",   # first: its "Bearer" challenge makes an anonymous request a 401
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.api.ReadOrOperate"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["understudy.api.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "understudy.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "understudy.api.schema.Schema",
    "EXCEPTION_HANDLER": "understudy.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "understudy API",
    "DESCRIPTION": "Incidents, inventory, runbooks, rehearsals and their step runs, findings, approvals, the "
                   "audit timeline and incident reports; operator actions go through the same table as the "
                   "rehearsal page. Authenticate with a personal API token (`Authorization: Bearer ust_…`, "
                   "made on the API tokens page) or the browser's session. See docs/api.md.",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["accounts.api.Reader"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # no badge fetched from the public validator: the docs page talks to this server only
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None, "deepLinking": True, "persistAuthorization": False},
    # several models have a "status": each its own enum in the schema, named after its model
    "ENUM_NAME_OVERRIDES": {
        "IncidentStatusEnum": "incidents.models.Incident.Status",
        "RehearsalStatusEnum": "rehearsals.models.Rehearsal.Status",
        "StepRunStatusEnum": "rehearsals.models.StepRun.Status",
        "ReportStatusEnum": "reports.models.Report.Status",
    },
}

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A socket's receive is a blocking BZPOPMIN of 5 s; redis-py 8 reads with a 5 s timeout by default, so an
            # idle socket's consumer died with "Timeout reading" every few seconds. Longer than the pop, a dead
            # Redis is still noticed.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                       "prefix": env.str("CHANNELS_PREFIX", default="understudy")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: broker/result backend on Redis in the full stack; in-memory transport
# with a worker thread inside the web process in the embedded default.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or "cache+memory://")
CELERY_TASK_DEFAULT_QUEUE = "understudy"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Run a worker thread inside the web process (embedded default).
UNDERSTUDY_INPROCESS_WORKER = env.bool("UNDERSTUDY_INPROCESS_WORKER", default=not REDIS_URL)

# Where hypervisors keep clone disks and staging trees unless a Hypervisor row says otherwise.
UNDERSTUDY_DATA_DIR = DATA_DIR
UNDERSTUDY_WORKER_KEY = env.str("UNDERSTUDY_WORKER_KEY", default=str(DATA_DIR / "keys" / "worker_ed25519"))

# Event path: how long the sink may hold events before writing a batch.
UNDERSTUDY_EVENT_FLUSH_SECONDS = env.float("UNDERSTUDY_EVENT_FLUSH_SECONDS", default=0.2)
UNDERSTUDY_EVENT_BATCH = env.int("UNDERSTUDY_EVENT_BATCH", default=200)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

if PROFILE == "production":
    # TLS ends at a reverse proxy that sets X-Forwarded-Proto (and strips it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
