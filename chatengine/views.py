"""Operations endpoints: liveness, readiness and Prometheus metrics. No auth, no throttling:
probes and scrapers carry no credentials, and must keep working while users are throttled."""

import ipaddress
import os

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine import health
from chatengine.exceptions import ServiceUnavailable
from chatengine.openapi import Tags, error_responses


class _AlwaysJson(BaseContentNegotiation):
    # A scraper's `Accept: text/plain` must not turn into a 406: these views pick their format.
    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OpsView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJson


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class ReadinessSerializer(HealthSerializer):
    checks = serializers.DictField(
        child=serializers.CharField(),
        help_text='Each dependency (`database`, `cache`) and its result: `"ok"`.',
    )


def _ok(value: dict) -> OpenApiExample:
    return OpenApiExample("Healthy", value=value, response_only=True, status_codes=["200"])


class HealthzView(OpsView):
    """Liveness: the process answers. Touches no dependency, so a database outage does not
    get every worker restarted."""

    @extend_schema(
        operation_id="healthz",
        summary="Liveness probe",
        description="200 while the process serves requests. Checks no dependency, so a "
        "database outage does not get every worker restarted. No authentication, no rate "
        "limit; `Accept` is not negotiated.",
        tags=[Tags.HEALTH],
        auth=[],
        responses={200: OpenApiResponse(HealthSerializer, "The process is alive.")},
        examples=[_ok({"status": "ok"})],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyzView(OpsView):
    """Readiness: the database and the cache answer within CHATENGINE_READYZ_TIMEOUT seconds."""

    @extend_schema(
        operation_id="readyz",
        summary="Readiness probe",
        description="200 when the database and the cache both answer within "
        "`CHATENGINE_READYZ_TIMEOUT` seconds (checked concurrently), else 503 with each "
        "check's result in `details.checks`. No authentication, no rate limit.",
        tags=[Tags.HEALTH],
        auth=[],
        responses={
            200: OpenApiResponse(ReadinessSerializer, "Ready to serve."),
            **error_responses(
                503,
                descriptions={
                    503: "A dependency failed or timed out; `details.checks` maps each one "
                    'to `"ok"`, `"timeout"` or `"error: <ExceptionType>"`.'
                },
            ),
        },
        examples=[_ok({"status": "ok", "checks": {"database": "ok", "cache": "ok"}})],
    )
    def get(self, request: Request) -> Response:
        checks = health.run_checks(timeout=settings.CHATENGINE_READYZ_TIMEOUT)
        failed = [name for name, result in checks.items() if result != health.OK]
        if failed:
            raise ServiceUnavailable(
                f"Not ready: {', '.join(failed)} failed.", details={"checks": checks}
            )
        return Response({"status": "ok", "checks": checks})


def client_ip_allowed(address: str | None, allowed: list[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in allowed)


class MetricsView(OpsView):
    """Prometheus exposition of this process's registry, for METRICS_ALLOWED_IPS only.

    The address checked is REMOTE_ADDR (the peer), never X-Forwarded-For, which any client
    can forge; behind a proxy, allow the proxy or scrape the workers directly.
    """

    @extend_schema(
        operation_id="metrics",
        summary="Prometheus metrics",
        description="This process's metrics in the Prometheus text exposition format, for "
        "scrapers at `METRICS_ALLOWED_IPS` only (checked against the peer address, never "
        "`X-Forwarded-For`). No authentication, no rate limit.",
        tags=[Tags.HEALTH],
        auth=[],
        responses={
            (200, "text/plain"): OpenApiResponse(
                {"type": "string"}, "Prometheus text format (`text/plain; version=...`)."
            ),
            **error_responses(403, descriptions={403: "Not from `METRICS_ALLOWED_IPS`."}),
        },
        examples=[
            OpenApiExample(
                "Some metrics",
                value="# HELP chatengine_llm_requests_total LLM requests by outcome.\n"
                "# TYPE chatengine_llm_requests_total counter\n"
                'chatengine_llm_requests_total{outcome="ok",provider="echo"} 12.0\n',
                response_only=True,
                status_codes=["200"],
                media_type="text/plain",
            )
        ],
    )
    def get(self, request: Request) -> HttpResponse:
        if not client_ip_allowed(request.META.get("REMOTE_ADDR"), settings.METRICS_ALLOWED_IPS):
            raise PermissionDenied("Metrics are not available from this address.")
        return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def _registry():
    # Under a multi-worker server (gunicorn -w N) each worker counts in files in
    # PROMETHEUS_MULTIPROC_DIR; whichever worker serves the scrape sums them all.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY
