"""chatengine settings: everything comes from the environment, with local defaults.

Unset, the project runs on SQLite, the local-memory cache and the offline `echo` LLM,
so `make run` works on a bare machine. docs/operating.md lists every variable (the history
cache's are in docs/history-cache.md).
"""

from datetime import timedelta
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
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "accounts",
    "conversations",
    "llm",
    "accounting",
    "openai_api",
]

MIDDLEWARE = [
    "chatengine.middleware.RequestIdMiddleware",
    "chatengine.middleware.AccessLogMiddleware",
    # Inside the two above (the envelope carries the request id, the access line the final
    # status), outside everything that can raise or read the body.
    "chatengine.middleware.ApiErrorEnvelopeMiddleware",
    "chatengine.middleware.LengthRequiredMiddleware",
    # Before anything that can answer (CommonMiddleware); a no-op unless CORS_ALLOWED_ORIGINS.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns an admin login refused by axes (AxesStandaloneBackend) into the lockout page.
    "axes.middleware.AxesMiddleware",
    # Last: under ASGI the stack above runs in one thread, not hopping per middleware.
    "chatengine.middleware.SyncStackMiddleware",
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
# DB_POOL=1 (PostgreSQL): psycopg's connection pool instead of per-thread persistent
# connections. Under ASGI every request's sync code runs in a fresh thread, which would open
# a new connection each time; the pool hands out warm ones. Django requires CONN_MAX_AGE=0
# with a pool.
DB_POOL = env_bool("DB_POOL", False)
if DB_POOL and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With a pool, Django turns CONN_HEALTH_CHECKS into psycopg_pool's check on checkout: a
    # restarted database costs a reconnect, not an error.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 2, minimum=0),
        "max_size": env_int("DB_POOL_MAX_SIZE", 10, minimum=1),
        "timeout": 10,
    }
# DB_TRANSACTION_POOLING=1: DATABASE_URL (and DATABASE_REPLICA_URL) lead to a pooler in
# transaction mode (PgBouncer pool_mode=transaction), where consecutive transactions of one
# client may run on different server connections. What breaks there is state kept on a server
# connection between transactions: Django's server-side cursors (`.iterator()` declares a
# WITH HOLD cursor that outlives its transaction) are turned off here, and so are prepared
# statements (DB_PREPARED_STATEMENTS below); the code takes no advisory locks and issues no
# SET.
# docs/scaling.md, "PgBouncer".
DB_TRANSACTION_POOLING = env_bool("DB_TRANSACTION_POOLING", False)
# DATABASE_REPLICA_URL: a streaming replica for the reads that tolerate lag (the admin's list
# pages and searches, export_sessions), and only when they ask for it (chatengine/replica.py).
# Every other read, and every write, goes to the primary (chatengine.replica.PrimaryRouter).
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL", "")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = dj_database_url.parse(
        DATABASE_REPLICA_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
    # A dead or black-holed replica costs one short connect, then the back-off below.
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    # Tests never create a database of their own for it: it reads the test database.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["chatengine.replica.PrimaryRouter"]
# A replica further behind than this (seconds of replay lag) is not used; its readers go to
# the primary. Its health and lag are checked at most every CHATENGINE_REPLICA_CHECK_S per
# process, and a replica that failed is left alone for as long.
CHATENGINE_REPLICA_MAX_LAG_S = env_float("CHATENGINE_REPLICA_MAX_LAG_S", 30.0)
CHATENGINE_REPLICA_CHECK_S = env_float("CHATENGINE_REPLICA_CHECK_S", 5.0)
if DB_TRANSACTION_POOLING:
    for _alias in DATABASES.values():
        _alias["DISABLE_SERVER_SIDE_CURSORS"] = True
# DB_PREPARED_STATEMENTS (PostgreSQL, on by default, off under DB_TRANSACTION_POOLING): bind
# parameters on the server and prepare a statement once a connection has run it 5 times, so
# the hot statements (the session read, the append, the context read) are planned once per
# connection instead of per request. Django's default is the opposite (client-side binding,
# nothing prepared), for the sake of transaction poolers: a prepared statement lives on one
# server connection, and PgBouncer before 1.21 cannot follow it (docs/performance.md).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", not DB_TRANSACTION_POOLING)
if DB_PREPARED_STATEMENTS and not DB_TRANSACTION_POOLING:
    for _alias in DATABASES.values():
        if _alias["ENGINE"] == "django.db.backends.postgresql":
            _alias.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
# REDIS_CLUSTER=1: REDIS_URL names any node of a Redis Cluster; chatengine.redis.client() is
# then redis-py's cluster client, and the Django cache (throttle counts, /readyz) runs over it
# (chatengine.redis.ClusterCache). docs/scaling.md, "Redis Cluster".
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
if REDIS_URL and REDIS_CLUSTER:
    CACHES = {"default": {"BACKEND": "chatengine.redis.ClusterCache", "LOCATION": REDIS_URL}}
elif REDIS_URL:
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
# Admin login lockout (django-axes): after AXES_FAILURE_LIMIT failed logins for one username
# from one address, that pair is refused (429 and a lockout page) for AXES_COOLOFF_MINUTES,
# even with the right password; the same user from elsewhere, or another user from there, is
# not. Attempts are kept in the database, not the cache: the cache may be a per-process locmem
# or an optional Redis with 50 ms timeouts, and a lockout must hold across workers and
# restarts. Staff see and clear them in the admin ("Access attempts") or with `manage.py
# axes_reset`. The address is REMOTE_ADDR: behind a proxy, have the server set it from the
# proxy's header (uvicorn --proxy-headers --forwarded-allow-ips=<proxy>).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.views.admin_lockout"
# Not verbose: no startup banner on every manage.py run; failures and lockouts still log.
AXES_VERBOSE = False

# API tokens (django-rest-knox, accounts/models.py): only a SHA-512 digest of each key is
# stored. Keys look like `ce_<64 hex>`, which secret scanners can match; they last until
# revoked unless made with an expiry.
KNOX_TOKEN_MODEL = "accounts.ApiToken"
# knox's own migrations would create its (swapped-out, never used) knox_authtoken table anyway;
# our model has its own migration in accounts/.
MIGRATION_MODULES = {"knox": None}
REST_KNOX = {
    "SECURE_HASH_ALGORITHM": "hashlib.sha512",
    "AUTH_TOKEN_CHARACTER_LENGTH": 64,
    "TOKEN_PREFIX": "ce_",
    "TOKEN_TTL": None,
}
# Seconds a process keeps a key's token and user rows after reading them (accounts/token_cache.py),
# so most requests authenticate without a query. The bound on revocation: a revoked key, or a
# deactivated user's, is refused at once by the process that revoked it and within this many
# seconds by every other. 0: read the database on every request.
CHATENGINE_TOKEN_CACHE_S = env_float("CHATENGINE_TOKEN_CACHE_S", 10.0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerOrTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["chatengine.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "chatengine.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "chatengine.exceptions.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "chatengine.openapi.ChatengineAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Per-user rates, counted in the default cache; see chatengine/throttling.py.
    "DEFAULT_THROTTLE_CLASSES": ["chatengine.throttling.UserScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "reads": env_rate("CHATENGINE_THROTTLE_READS", "600/min"),
        "writes": env_rate("CHATENGINE_THROTTLE_WRITES", "120/min"),
        "replies": env_rate("CHATENGINE_THROTTLE_REPLIES", "30/min"),
    },
}
# OpenAPI (drf-spectacular): docs/api.md, "API documentation". The docs pages and the schema are
# public; the UI assets come from drf-spectacular-sidecar's static files, never a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "chatengine API",
    "DESCRIPTION": (
        "Chat sessions, their message history and LLM replies. Every endpoint under "
        "`/api/v1/` needs `Authorization: Bearer <token>`. Every error is the envelope "
        '`{"error": {"type", "message", "details", "request_id"}}`; branch on `type`. '
        "Lists are keyset-paginated: `{results, next, has_more}`, follow `next` until null. "
        "Text is stored exactly as sent, except that U+0000 (NUL) is rejected everywhere."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # A string field that rejects "" is documented with minLength: 1.
    "ENFORCE_NON_BLANK_FIELDS": True,
    "ENUM_NAME_OVERRIDES": {
        "ErrorTypeEnum": "chatengine.openapi.ERROR_TYPES",
        "ContextStrategyEnum": "conversations.models.ChatSession.ContextStrategy",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chatengine.openapi.document_tags_and_check_operations",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # validatorUrl: Swagger UI would otherwise send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "tryItOutEnabled": False},
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
# Usage (accounting/): each user's monthly token budget (input + output of replies and
# titles, calendar month in UTC); past it a reply is a 429 quota_exceeded, appends still work.
# 0: no quota.
CHATENGINE_MONTHLY_TOKEN_QUOTA = env_int("CHATENGINE_MONTHLY_TOKEN_QUOTA", 0, minimum=0)
# Give a session created without a title one after its first reply (llm/titles.py).
CHATENGINE_AUTO_TITLE = env_bool("CHATENGINE_AUTO_TITLE", True)
# Message search (conversations/search.py): the PostgreSQL text search configuration of the
# search indexes and queries. 'simple' (default) lowercases and splits words, in any language;
# 'english' etc. also stem and drop stop words. Changing it: `manage.py rebuild_search_index`.
CHATENGINE_SEARCH_CONFIG = env_str("CHATENGINE_SEARCH_CONFIG", "simple").strip()
# A search ranks (ts_rank) at most this many of the matching messages, the newest: a word in
# most of a long history costs this many rows, not all of them. Older matches beyond it are not
# returned; narrow the search (more words, session=, since=) to reach them.
CHATENGINE_SEARCH_MAX_RANKED = env_int("CHATENGINE_SEARCH_MAX_RANKED", 1000, minimum=1)


# --- Observability ----------------------------------------------------------------------
# JSON lines on stdout in production, readable lines in development. One handler; its filter
# stamps the request id on every record, whichever logger (chatengine, llm, a library) made it.
LOG_FORMAT = env_choice("LOG_FORMAT", "console" if DEBUG else "json", ["json", "console"])
LOG_LEVEL = env_choice(
    "LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], upper=True
)
# Servers log to stdout (12-factor); manage.py defaults to stderr, because commands such as
# export_sessions write their data to stdout.
LOG_STREAM = env_choice("LOG_STREAM", "stdout", ["stdout", "stderr"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "chatengine.logs.RequestIdFilter"},
        "shorten_values": {"()": "chatengine.logs.ShortenValuesFilter"},
    },
    "formatters": {
        "json": {"()": "chatengine.logs.json_formatter"},
        "console": {"()": "chatengine.logs.ConsoleFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": f"ext://sys.{LOG_STREAM}",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "shorten_values"],
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

# --- History cache (conversations/cache.py) ---------------------------------------------
# The session tail lives in the CHATENGINE_CACHE_ALIAS cache (Redis when REDIS_URL is set).
# Redis calls get a short socket timeout and no client-side retries: when Redis is slow or
# down, a request pays at most one timeout and then reads the database, and the cache backs
# off for CHATENGINE_CACHE_RETRY_S seconds before trying again.
CHATENGINE_CACHE_ENABLED = env_bool("CHATENGINE_CACHE_ENABLED", True)
CHATENGINE_CACHE_ALIAS = "default"
CHATENGINE_CACHE_TTL_S = env_int("CHATENGINE_CACHE_TTL_S", 86_400, minimum=1)
CHATENGINE_CACHE_TAIL = env_int("CHATENGINE_CACHE_TAIL", 200, minimum=1)
CHATENGINE_CACHE_TIMEOUT_MS = env_int("CHATENGINE_CACHE_TIMEOUT_MS", 50, minimum=1)
CHATENGINE_CACHE_RETRY_S = env_float("CHATENGINE_CACHE_RETRY_S", 1.0)


def redis_cache_options(timeout_ms: int) -> dict:
    """django-redis OPTIONS with the history cache's timeouts (tests reuse it for fault runs)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SOCKET_CONNECT_TIMEOUT": timeout_ms / 1000,
        "SOCKET_TIMEOUT": timeout_ms / 1000,
        "CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 0)},
    }


if REDIS_URL and not REDIS_CLUSTER:
    CACHES["default"]["OPTIONS"] = redis_cache_options(CHATENGINE_CACHE_TIMEOUT_MS)


# --- LLM replies (llm app) ----------------------------------------------------------------
def _env_model_map(name: str, cast: type) -> dict:
    """`model=value,model=value` from the environment, e.g. LLM_MODEL_CONTEXT_WINDOWS."""
    from django.core.exceptions import ImproperlyConfigured

    result = {}
    for item in env_list(name, []):
        model, sep, value = item.partition("=")
        try:
            if not (sep and model.strip() and value.strip()):
                raise ValueError
            result[model.strip()] = cast(value.strip())
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: expected model=value pairs, got {item!r}"
            ) from None
    return result


# LLM_PROVIDER: "echo", "openai" or a dotted path to a provider class (like EMAIL_BACKEND).
# Unset: "openai" when OPENAI_API_KEY is set, else the offline "echo" provider.
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "")  # blank: the SDK's default (api.openai.com)
LLM_PROVIDER = env_str("LLM_PROVIDER", "") or ("openai" if OPENAI_API_KEY else "echo")
LLM_MODEL = env_str("LLM_MODEL", "gpt-4o-mini")
LLM_TIMEOUT_S = env_float("LLM_TIMEOUT_S", 60.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0)
LLM_DEFAULT_CONTEXT_TOKENS = env_int("LLM_DEFAULT_CONTEXT_TOKENS", 8192, minimum=1)
LLM_DEFAULT_MAX_OUTPUT_TOKENS = env_int("LLM_DEFAULT_MAX_OUTPUT_TOKENS", 1024, minimum=1)
# Kept free on top of the reserved output: absorbs the few tokens a server adds that the
# counting recipe does not see (tool-call framing, a different server-side template).
LLM_CONTEXT_SAFETY_MARGIN = env_int("LLM_CONTEXT_SAFETY_MARGIN", 32, minimum=0)
# A new session's context strategy: "window" (older messages are left out) or "summary"
# (they are folded into a rolling summary, llm/summaries.py). Each session may change its own.
LLM_CONTEXT_STRATEGY = env_choice("LLM_CONTEXT_STRATEGY", "window", ["window", "summary"])
# The summary's cap, in tokens of the message that carries it: this much of the prompt budget
# is set aside for it in a summary-strategy session.
LLM_SUMMARY_MAX_TOKENS = env_int("LLM_SUMMARY_MAX_TOKENS", 512, minimum=32)
# Model -> context window (tokens). Matched exactly, then by the longest prefix, so dated
# variants ("gpt-4o-2024-08-06") inherit. Add or override with
# LLM_MODEL_CONTEXT_WINDOWS="my-model=32768,gpt-4o=64000".
LLM_MODEL_CONTEXT_WINDOWS = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-5": 400_000,
    "echo": 8_192,
} | _env_model_map("LLM_MODEL_CONTEXT_WINDOWS", int)
# The models a caller may name (a session's or a reply's `model`, the context preview's
# `?model=`); any other is a 400. Default: LLM_MODEL and the models of the table above.
# LLM_ALLOWED_MODELS="gpt-4o,gpt-4o-mini" replaces that list; "*" allows any name. Matched
# exactly (a dated variant must be listed itself): the upstream account pays for the model.
LLM_ALLOWED_MODELS = env_list(
    "LLM_ALLOWED_MODELS", [LLM_MODEL, *(m for m in LLM_MODEL_CONTEXT_WINDOWS if m != LLM_MODEL)]
)
# Model -> tiktoken encoding, for models tiktoken does not know (or to override it), e.g.
# LLM_MODEL_ENCODINGS="llama3=cl100k_base". Same matching as above.
LLM_MODEL_ENCODINGS = {"echo": "cl100k_base"} | _env_model_map("LLM_MODEL_ENCODINGS", str)
# TIKTOKEN_CACHE_DIR is not a setting: tiktoken reads it from the environment itself, and so
# does llm/tokens.py, which uses a file there only if tiktoken would not download it.


def _price(value: str) -> tuple:
    """ "0.15/0.60" -> (Decimal("0.15"), Decimal("0.60")): input/output per million tokens."""
    from decimal import Decimal, InvalidOperation

    parts = value.split("/")
    try:
        prices = tuple(Decimal(part.strip()) for part in parts)
    except InvalidOperation:
        raise ValueError(value) from None
    if len(prices) != 2 or any(not p.is_finite() or p < 0 for p in prices):
        raise ValueError(value)
    return prices


# Model -> (input, output) price per million tokens, for the usage report and the cost of each
# reply (accounting/). LLM_PRICES="gpt-4o-mini=0.15/0.60,gpt-4o=2.50/10". Empty by default:
# what the upstream account pays (list price, batch, a contract) is the operator's to say; a
# model without a price has no cost, never a guessed one. Matched exactly, or as a dated
# snapshot of a listed name ("gpt-4o-mini-2024-07-18").
LLM_PRICES = _env_model_map("LLM_PRICES", _price)

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
