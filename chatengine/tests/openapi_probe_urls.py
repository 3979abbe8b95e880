"""A urlconf of probe views for test_openapi.py: one documented the house way, others not, to
show what ChatengineAutoSchema adds by itself and what the completeness hook refuses."""

from django.urls import path
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.openapi import Tags, error_responses
from chatengine.throttling import UserScopedRateThrottle


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()


_OK = OpenApiExample("ok", value={"status": "ok"}, response_only=True, status_codes=["200"])


class PublicThrottledView(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [UserScopedRateThrottle]

    @extend_schema(
        summary="Probe",
        description="Public and throttled.",
        tags=[Tags.HEALTH],
        responses={200: OpenApiResponse(StatusSerializer, "Fine."), **error_responses(503)},
        examples=[_OK],
    )
    def get(self, request):
        return Response({"status": "ok"})


class UndocumentedView(APIView):
    @extend_schema(responses=StatusSerializer)  # a response type, and nothing else
    def get(self, request):
        return Response({"status": "ok"})


documented_urlpatterns = [path("api/v1/probe/", PublicThrottledView.as_view())]
urlpatterns = [*documented_urlpatterns, path("api/v1/undocumented/", UndocumentedView.as_view())]
