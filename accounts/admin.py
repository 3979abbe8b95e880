"""API tokens in the admin: who has which, and whether it is used; staff can revoke one.

No key is stored, and the digest is not shown either: name, prefix, dates. Tokens are made by
their owner (the API) or by a developer (`manage.py create_token`), never here.
"""

from django.contrib import admin

from accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created", "expiry", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["name", "token_key", "user__username"]
    list_filter = ["created", "expiry"]
    ordering = ["-created"]
    fields = ["name", "user", "prefix", "created", "expiry", "last_used_at"]
    readonly_fields = fields

    @admin.display(description="prefix")
    def prefix(self, token: ApiToken) -> str:
        return f"{token.token_key}…"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
