"""OpenAPI examples for the token endpoints; the values are what the API really returns."""

from drf_spectacular.utils import OpenApiExample

TOKEN = {
    "id": "5d0c3f8e-2b7a-4e61-9c4d-8a1f0e2b3c4d",
    "name": "laptop",
    "prefix": "ce_3fa9c2d81b0e",
    "created_at": "2026-11-27T09:14:40.101Z",
    "expires_at": "2027-02-25T09:14:40.101Z",
    "last_used_at": "2026-11-27T10:02:11.512Z",
}

TOKEN_CREATE_REQUEST = OpenApiExample(
    "A token for 90 days",
    value={"name": "laptop", "expires_in_days": 90},
    request_only=True,
)
TOKEN_CREATED = OpenApiExample(
    "The new token, with its key",
    value={
        **TOKEN,
        "last_used_at": None,
        "key": "ce_3fa9c2d81b0e47a6d5c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7",
    },
    response_only=True,
    status_codes=["201"],
)
TOKEN_PAGE = OpenApiExample(
    "Your tokens",
    value={"results": [TOKEN], "next": None, "has_more": False},
    response_only=True,
    status_codes=["200"],
)
