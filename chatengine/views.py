"""Operations endpoints: liveness, readiness and Prometheus metrics. No auth, no throttling:
probes and scrapers carry no credentials, and must keep working while users are throttled."""

import ipaddress
import os

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework.exceptions import PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine import health
from chatengine.exceptions import ServiceUnavailable


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
    schema = None  # operations endpoints, not part of the documented API


class HealthzView(OpsView):
    """Liveness: the process answers. Touches no dependency, so a database outage does not
    get every worker restarted."""

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyzView(OpsView):
    """Readiness: the database and the cache answer within CHATENGINE_READYZ_TIMEOUT seconds."""

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
