import logging

from django.apps import AppConfig

logger = logging.getLogger("chatengine.llm")


class LlmConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "llm"
    verbose_name = "LLM"


def warn_if_echo_provider() -> None:
    """The one start-up warning that replies are echoes, like Django's console email backend.

    Called by the server entry points (chatengine/wsgi.py, asgi.py; runserver loads wsgi.py),
    not from ready(): every management command would print it, into data some write to stdout.
    """
    from django.conf import settings

    if settings.LLM_PROVIDER == "echo":
        logger.warning(
            "LLM_PROVIDER is 'echo': replies are echoes of the last user message, not model "
            "output. Set OPENAI_API_KEY (and OPENAI_BASE_URL for another server) or "
            "LLM_PROVIDER to get real replies."
        )
