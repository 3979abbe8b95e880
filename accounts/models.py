"""API tokens: only a digest of each key is stored (django-rest-knox's scheme).

A key is `ce_` + 64 hex characters (256 random bits). The row keeps the key's first 15
characters (`token_key`, indexed: the lookup) and its SHA-512 digest (compared in constant
time); neither lets anyone authenticate. The key itself is shown once, when it is made.
"""

import uuid

from django.conf import settings
from django.db import models
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS

TOKEN_NAME_MAX_CHARS = 64


class ApiToken(AbstractAuthToken):
    # A public id for the API and the admin; knox's primary key is the digest, which has no
    # business in a URL.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=TOKEN_NAME_MAX_CHARS)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        indexes = [models.Index(fields=["user", "created"], name="apitoken_user_created_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_key}…)"

    @property
    def prefix(self) -> str:
        """The key's first characters: enough to recognise it, useless to authenticate."""
        return self.token_key
