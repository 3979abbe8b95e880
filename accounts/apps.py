from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "API access"

    def ready(self) -> None:
        from accounts import token_cache

        token_cache.connect_signals()
