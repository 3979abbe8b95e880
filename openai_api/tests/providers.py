"""A provider that fails as told (selected by LLM_PROVIDER, as any provider is): how the tests
reach the errors no real component produces on demand, a bug (500) and an unavailable
dependency (503)."""

from chatengine.exceptions import ServiceUnavailable


class FailingProvider:
    name = "failing"

    def complete(self, messages, *, model, max_output_tokens, options=None):
        last = messages[-1].content
        if last == "unavailable":
            raise ServiceUnavailable("The model server is down for maintenance.")
        raise RuntimeError("a bug in a provider")

    def stream(self, messages, *, model, max_output_tokens, options=None):
        raise RuntimeError("not used")

    async def astream(self, messages, *, model, max_output_tokens, options=None):
        raise RuntimeError("not used")
        yield
