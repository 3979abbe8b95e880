import logging

from django.apps import AppConfig

logger = logging.getLogger("chatengine.llm")


class LlmConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "llm"
    verbose_name = "LLM"

    def ready(self) -> None:
        from django.conf import settings

        if settings.LLM_PROVIDER == "echo":
            logger.warning(
                "LLM_PROVIDER is 'echo': replies are echoes of the last user message, not model "
                "output. Set OPENAI_API_KEY (and OPENAI_BASE_URL for another server) or "
                "LLM_PROVIDER to get real replies."
            )
