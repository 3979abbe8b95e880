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
    "corsheaders",
    "conversations",
    "llm",
]

MIDDLEWARE = [
    "chatengine.middleware.RequestIdMiddleware",
    "chatengine.middleware.AccessLogMiddleware",
    # Before anything that can answer (CommonMiddleware); a no-op unless CORS_ALLOWED_ORIGINS.
    "corsheaders.middleware.CorsMiddleware",
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
    "DEFAULT_PARSER_CLASSES": ["chatengine.parsers.StrictJSONParser"],
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
    "SCHEMA_PATH_PREFIX": r"/api/v1",
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


# --- Security (production) --------------------------------------------------------------
# `manage.py check --deploy --fail-level WARNING` passes with DEBUG=0 and a real SECRET_KEY.
# TLS usually ends at a proxy: set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https when
# the proxy sets that header (and drops any the client sent), so Django knows the request was
# HTTPS: HSTS is only sent on secure requests, and CSRF checks the https Origin of the admin.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be '<META name>,<value>', "
            "e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SILENCED_SYSTEM_CHECKS = []
if not SECURE_SSL_REDIRECT:
    # security.W008: TLS ends at the proxy in front of us, which redirects http to https
    # itself; redirecting here would loop (we see plain http from the proxy) unless
    # SECURE_PROXY_SSL_HEADER is set. SECURE_SSL_REDIRECT=1 turns it on and the check with it.
    SILENCED_SYSTEM_CHECKS.append("security.W008")
if SECURE_HSTS_SECONDS and not SECURE_HSTS_PRELOAD:
    # security.W021: joining the browsers' HSTS preload list is the domain owner's decision
    # (a submission to hstspreload.org, slow to undo), not a default a service can make.
    # SECURE_HSTS_PRELOAD=1 opts in.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# CORS (django-cors-headers): off, no header at all, unless CORS_ALLOWED_ORIGINS lists origins
# ("https://app.example.com,https://admin.example.com"). Only the API; tokens travel in the
# Authorization header, so no cookies cross origins.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = ("x-request-id", "retry-after", "idempotent-replayed")
