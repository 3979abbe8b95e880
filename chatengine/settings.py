"""chatengine settings: everything comes from the environment, with local defaults.

Unset, the project runs on SQLite, the local-memory cache and the offline `echo` LLM,
so `make run` works on a bare machine. README.md lists every variable.
"""

from pathlib import Path

import dj_database_url

from chatengine.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core -------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-local-development-only-key-change-me"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "conversations",
    "llm",
]

MIDDLEWARE = [
    "chatengine.middleware.RequestIdMiddleware",
    "chatengine.middleware.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatengine.urls"
WSGI_APPLICATION = "chatengine.wsgi.application"
ASGI_APPLICATION = "chatengine.asgi.application"

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

# --- Database ---------------------------------------------------------------------------
# DATABASE_URL unset: a SQLite file in the project. PostgreSQL goes through psycopg 3 with
# persistent connections (CONN_MAX_AGE) checked before reuse (CONN_HEALTH_CHECKS), so a
# restarted database costs one reconnect instead of an error.
DATABASE_URL = env_str("DATABASE_URL", "")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chatengine.authentication.BearerOrTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "chatengine.exceptions.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Per-user rates, counted in the default cache; see chatengine/throttling.py.
    "DEFAULT_THROTTLE_CLASSES": ["chatengine.throttling.UserScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "reads": env_rate("CHATENGINE_THROTTLE_READS", "600/min"),
        "writes": env_rate("CHATENGINE_THROTTLE_WRITES", "120/min"),
        "replies": env_rate("CHATENGINE_THROTTLE_REPLIES", "30/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatengine API",
    "DESCRIPTION": "Chat sessions, messages and LLM replies.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- chatengine -------------------------------------------------------------------------
CHATENGINE_MAX_MESSAGE_CHARS = env_int("CHATENGINE_MAX_MESSAGE_CHARS", 100_000, minimum=1)
# Idempotency-Key (conversations/idempotency.py): how long a key replays its response (never
# less than a day: clients retry across outages), and after how many seconds an unfinished
# claim (its worker died mid-request) may be taken over by a retry.
CHATENGINE_IDEMPOTENCY_TTL_HOURS = env_int("CHATENGINE_IDEMPOTENCY_TTL_HOURS", 24, minimum=24)
CHATENGINE_IDEMPOTENCY_LEASE_SECONDS = env_int(
    "CHATENGINE_IDEMPOTENCY_LEASE_SECONDS", 300, minimum=1
)


# --- Observability ----------------------------------------------------------------------
# JSON lines on stdout in production, readable lines in development. One handler; its filter
# stamps the request id on every record, whichever logger (chatengine, llm, a library) made it.
LOG_FORMAT = env_choice("LOG_FORMAT", "console" if DEBUG else "json", ["json", "console"])
LOG_LEVEL = env_choice(
    "LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], upper=True
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "chatengine.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "chatengine.logs.json_formatter"},
        "console": {"()": "chatengine.logs.ConsoleFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # chatengine.errors logs every error response once, with its error_type (and the
        # traceback for 5xx); django.request would repeat each one with the raw path and no
        # type, so it is muted. django.security (DisallowedHost, ...) still logs.
        "django.request": {"level": "CRITICAL"},
        # uvicorn configures its loggers before Django loads; route its server lines (startup,
        # shutdown, protocol errors) through the same handler so production logs are all JSON.
        "uvicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}
# Who may scrape /metrics: addresses or networks (CIDR), matched against REMOTE_ADDR.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
# Seconds /readyz waits for the database and cache checks together.
CHATENGINE_READYZ_TIMEOUT = env_float("CHATENGINE_READYZ_TIMEOUT", 2.0)

CSRF_FAILURE_VIEW = "chatengine.exceptions.csrf_failure"
