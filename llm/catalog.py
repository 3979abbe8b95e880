"""Which models callers may name: one rule, read from settings.LLM_ALLOWED_MODELS.

Asked wherever a model name comes in from outside (the session and reply serializers, the
context preview's query, `manage.py chat --model`), before anything is stored or sent.
"""

from django.conf import settings

ANY_MODEL = "*"
NOT_ALLOWED = "This model is not available on this server."


def is_allowed_model(model: str) -> bool:
    allowed = settings.LLM_ALLOWED_MODELS
    return ANY_MODEL in allowed or model in allowed
