from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounting import selectors
from accounting.serializers import UsageQuerySerializer, UsageReportSerializer
from chatengine.openapi import Tags, error_responses
from chatengine.validation import validated_query

USAGE_EXAMPLE = OpenApiExample(
    "Usage by model",
    value={
        "since": "2026-12-01T00:00:00Z",
        "until": "2026-12-02T09:00:00Z",
        "group_by": "model",
        "totals": {
            "key": "total",
            "calls": 14,
            "input_tokens": 18230,
            "output_tokens": 2104,
            "total_tokens": 20334,
            "cost": "0.0039969000",
            "unpriced_calls": 0,
        },
        "results": [
            {
                "key": "gpt-4o-mini-2024-07-18",
                "calls": 14,
                "input_tokens": 18230,
                "output_tokens": 2104,
                "total_tokens": 20334,
                "cost": "0.0039969000",
                "unpriced_calls": 0,
            }
        ],
        "quota": {"limit": 1000000, "used": 20334, "resets_at": "2027-01-01T00:00:00Z"},
    },
    response_only=True,
    status_codes=["200"],
)


class UsageView(APIView):
    @extend_schema(
        operation_id="usage",
        summary="Your token usage and cost",
        description="Your LLM calls (replies and automatic titles) in `[since, until)`, summed "
        "by `group_by`, with the totals and your monthly quota. Tokens are what the provider "
        "reported; `cost` comes from the operator's price table (LLM_PRICES). Calls of deleted "
        "sessions still count.",
        tags=[Tags.USAGE],
        parameters=[UsageQuerySerializer],
        responses={
            200: OpenApiResponse(UsageReportSerializer, "Your usage."),
            **error_responses(400),
        },
        examples=[USAGE_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        query = validated_query(UsageQuerySerializer, request)
        report = selectors.usage_report(user_id=request.user.pk, **query)
        return Response(UsageReportSerializer(report).data)
