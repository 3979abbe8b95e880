"""The token endpoints (a user manages their own API keys) and the admin lockout page."""

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import schema, selectors, services
from accounts.serializers import TokenCreatedSerializer, TokenCreateInputSerializer, TokenSerializer
from chatengine.openapi import Tags, error_responses, paginated
from chatengine.validation import validated

token_id_parameter = OpenApiParameter(
    "token_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The token's id. A missing id, another user's and one that is not a UUID "
    "all answer 404 `not_found`.",
)


class TokenListCreateView(APIView):
    @extend_schema(
        operation_id="tokens_list",
        summary="List your API tokens",
        description="Your tokens, newest first, expired ones included until revoked. Keys are "
        f"never shown again: `prefix` tells them apart. At most {services.MAX_TOKENS_PER_USER} "
        "tokens, so the list is one page (`next` is null).",
        tags=[Tags.TOKENS],
        responses={200: OpenApiResponse(paginated(TokenSerializer), "Your tokens.")},
        examples=[schema.TOKEN_PAGE],
    )
    def get(self, request: Request) -> Response:
        tokens = selectors.list_tokens(user=request.user)
        return Response(
            {"results": TokenSerializer(tokens, many=True).data, "next": None, "has_more": False}
        )

    @extend_schema(
        operation_id="tokens_create",
        summary="Create an API token",
        description="A new key for `Authorization: Bearer <key>`, returned in this response "
        "only: store it now (only its digest is kept). Name it after where it will be used; "
        "it lasts `expires_in_days`, or until revoked. Not idempotent (a replayed response "
        "would have to keep the key).",
        tags=[Tags.TOKENS],
        request=TokenCreateInputSerializer,
        responses={
            201: OpenApiResponse(TokenCreatedSerializer, "The new token, with its key."),
            **error_responses(
                409,
                descriptions={
                    409: f"You already have {services.MAX_TOKENS_PER_USER} tokens; revoke one."
                },
            ),
        },
        examples=[schema.TOKEN_CREATE_REQUEST, schema.TOKEN_CREATED],
    )
    def post(self, request: Request) -> Response:
        data = validated(TokenCreateInputSerializer, request.data)
        days = data["expires_in_days"]
        token, key = services.create_token(
            user=request.user,
            name=data["name"],
            expires_in=timedelta(days=days) if days is not None else None,
        )
        return Response({**TokenSerializer(token).data, "key": key}, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[token_id_parameter])
class TokenDetailView(APIView):
    @extend_schema(
        operation_id="tokens_destroy",
        summary="Revoke an API token",
        description="Deletes the token: its key stops working at once (the key this request "
        "used included). No response body.",
        tags=[Tags.TOKENS],
        responses={204: OpenApiResponse(None, "Revoked; no body.")},
    )
    def delete(self, request: Request, token_id: str) -> Response:
        token = selectors.get_token_for_user(user=request.user, token_id=token_id)
        services.revoke_token(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


def admin_lockout(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the page an admin login gets while its user and address are
    locked out, with how long that lasts (also as Retry-After, in seconds)."""
    cooloff = settings.AXES_COOLOFF_TIME
    response = TemplateResponse(
        request,
        "axes/lockout.html",
        {
            "title": "Too many failed logins",
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "cooloff_minutes": int(cooloff.total_seconds() // 60),
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(int(cooloff.total_seconds()))
    return response.render()
