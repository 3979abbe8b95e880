"""Domain metrics (Prometheus). Request metrics come from the HTTP layer; these count what the
engine does, whichever entry point (API, command) did it."""

from prometheus_client import Counter, Histogram, disable_created_metrics

# No `*_created` series beside every counter and histogram: they double the series count and
# Prometheus does not need them to compute rates.
disable_created_metrics()

MESSAGES_APPENDED = Counter(
    "chatengine_messages_appended_total", "Messages appended to sessions.", ["role"]
)
LLM_REQUESTS = Counter(
    "chatengine_llm_requests_total",
    "LLM provider calls by outcome: ok, interrupted, or the llm.error category.",
    ["provider", "outcome"],
)
LLM_LATENCY = Histogram(
    "chatengine_llm_latency_seconds",
    "Wall time of one LLM provider call.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LLM_TOKENS = Counter(
    "chatengine_llm_tokens_total", "Tokens reported by the LLM provider.", ["provider", "kind"]
)
CACHE_EVENTS = Counter(
    "chatengine_cache_events_total",
    "History cache events: hit, miss, error, rebuild.",
    ["event"],
)

# --- HTTP (recorded by chatengine.middleware.AccessLogMiddleware) ------------------------------
# `route` is the URL pattern (e.g. /api/v1/sessions/{session_id}/), never the raw path, so the
# number of series stays bounded whatever ids clients send; unresolved URLs share "<unmatched>".
HTTP_REQUESTS = Counter(
    "chatengine_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "chatengine_http_request_duration_seconds",
    "HTTP request latency, to the last byte for streamed responses.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
