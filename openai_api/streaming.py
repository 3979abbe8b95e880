"""A reply's `llm.services` stream events as OpenAI's Responses event stream.

The sequence: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, response.completed; on a failure
response.failed then error. Every event carries `sequence_number` (0, 1, ...).

The assistant message is stored when the reply ends, so its id is not known while it streams:
the output item carries a provisional id (`msg_pending_…`) until `response.completed`, whose
response has the stored message's id (what `responses.stream(...).get_final_response()` and
every later read return).
"""

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from chatengine.exceptions import ApplicationError, log_error
from chatengine.request_id import bind_request_id
from llm import services as replies
from openai_api import serializers
from openai_api.errors import openai_error_body
from openai_api.services import PlannedResponse


class ResponseEvents:
    def __init__(self, plan: PlannedResponse):
        self.plan = plan
        self.sequence = 0
        self.item_id = f"msg_pending_{plan.response_id.removeprefix('resp_')}"
        self.text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        plan = self.plan
        return serializers.response_object(
            response_id=plan.response_id,
            created_at=plan.created_at,
            request=plan.request,
            session=plan.prepared.session if plan.request.store else None,
            status=status,
            output=fields.pop("output", []),
            usage=fields.pop("usage", None),
            model=plan.prepared.model,
            **fields,
        )

    def _item(self, status: str) -> dict[str, Any]:
        item = serializers.output_message(message_id=self.item_id, text="".join(self.text))
        item["status"] = status
        if status == "in_progress":
            item["content"] = []
        return item

    def start(self) -> Iterator[bytes]:
        yield self._event("response.created", response=self._response("in_progress"))
        yield self._event("response.in_progress", response=self._response("in_progress"))
        yield self._event(
            "response.output_item.added", output_index=0, item=self._item("in_progress")
        )
        yield self._event(
            "response.content_part.added",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            part=serializers.output_text(""),
        )

    def delta(self, text: str) -> bytes:
        self.text.append(text)
        return self._event(
            "response.output_text.delta",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def end(self, event: replies.StreamEvent) -> Iterator[bytes]:
        if isinstance(event, replies.Failed):
            yield from self._failed(event)
            return
        message = event.message
        text = "".join(self.text)
        yield self._event(
            "response.output_text.done",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield self._event(
            "response.content_part.done",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            part=serializers.output_text(text),
        )
        yield self._event("response.output_item.done", output_index=0, item=self._item("completed"))
        plan = self.plan
        yield self._event(
            "response.completed",
            response=serializers.reply_response_object(
                response_id=plan.response_id,
                created_at=plan.created_at,
                request=plan.request,
                session=plan.prepared.session,
                reply=message,
            ),
        )

    def _failed(self, event: replies.Failed) -> Iterator[bytes]:
        exc: ApplicationError = event.error
        # The status line went out before the failure: log it as the handler logs errors.
        log_error(
            error_type=exc.error_type,
            status=exc.status_code,
            message=exc.message,
            exc=exc,
            view="ResponsesView",
            streamed=True,
        )
        output = serializers.message_items(event.message) if event.message is not None else []
        yield self._event(
            "response.failed",
            response=self._response(
                "failed", output=output, error={"code": exc.error_type, "message": exc.message}
            ),
        )
        body = openai_error_body(status=exc.status_code, code=exc.error_type, message=exc.message)
        yield self._event("error", **body["error"], error=body["error"])


def sync_body(plan: PlannedResponse, request_id: str | None) -> Iterator[bytes]:
    events = ResponseEvents(plan)
    yield from events.start()
    stream = bind_request_id(replies.stream_reply(plan.prepared), request_id=request_id)
    try:
        for event in stream:
            if isinstance(event, replies.Delta):
                yield events.delta(event.text)
            else:
                yield from events.end(event)
    finally:
        stream.close()  # the client left: the partial reply is stored as interrupted


async def async_body(plan: PlannedResponse, request_id: str | None) -> AsyncIterator[bytes]:
    events = ResponseEvents(plan)
    for chunk in events.start():
        yield chunk
    stream = bind_request_id(replies.astream_reply(plan.prepared), request_id=request_id)
    try:
        async for event in stream:
            if isinstance(event, replies.Delta):
                yield events.delta(event.text)
            else:
                for chunk in events.end(event):
                    yield chunk
    finally:
        await stream.aclose()
