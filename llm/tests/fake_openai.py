"""A fake OpenAI-compatible chat-completions server on a real loopback socket.

Used by the tests (the real `openai` SDK talks to it over HTTP, SSE framing included) and by
benchmarks. Standalone:

    python -m llm.tests.fake_openai --port 8001 --latency-ms 50

Behaviour per request is the current `mode` (or the next queued one, see `fail_next`):
ok, rate_limit (429 + Retry-After), server_error (500), unauthorized (401),
context_length (400 context_length_exceeded), hang (answers after `hang_s`), malformed
(a chunk that is not JSON), close_mid_stream (the connection drops after two chunks).
Every request body received is kept in `requests`.
"""

import argparse
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = {
    "ok",
    "rate_limit",
    "server_error",
    "unauthorized",
    "context_length",
    "hang",
    "malformed",
    "close_mid_stream",
}
DEFAULT_REPLY = "Hello from the fake model, one word at a time."


def _count_tokens(text: str) -> int:
    return len(text.split())


class FakeOpenAI:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        chunk_delay_ms: int = 0,
        reply_text: str = DEFAULT_REPLY,
        retry_after: str = "7",
        hang_s: float = 30.0,
    ) -> None:
        self.latency_ms = latency_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.reply_text = reply_text
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.mode = "ok"
        # Quote the request's last message and Authorization header in error bodies, as some
        # OpenAI-compatible servers do: what the engine logs about a failure must not carry them.
        self.echo_in_errors = False
        self.requests: list[dict[str, Any]] = []
        # Set: whole (not streamed) replies call these tools (chat-completions `tool_calls`).
        self.reply_tool_calls: list[dict[str, Any]] | None = None
        self.stream_closed_early = threading.Event()  # a client went away mid-stream
        self._queue: deque[str] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, mode: str, times: int = 1) -> None:
        """Answer the next `times` requests with `mode`, then go back to `self.mode`."""
        assert mode in MODES, mode
        with self._lock:
            self._queue.extend([mode] * times)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self.mode = "ok"
        self.reply_tool_calls = None
        self.stream_closed_early.clear()

    def start(self) -> "FakeOpenAI":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_mode(self, body: dict[str, Any]) -> str:
        with self._lock:
            self.requests.append(body)
            return self._queue.popleft() if self._queue else self.mode

    # --- HTTP -----------------------------------------------------------------------------
    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as production HTTP servers set it (uvicorn, nginx, Go's net/http).
            # With Nagle on, a chunk written right after the headers waits for the client's
            # ACK of them; a client on a kept-alive connection delays that ACK by up to 40 ms,
            # so every streamed reply but the first on a connection looked 40 ms slower.
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # keep test output clean
                pass

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str | None, headers=None) -> None:
                if fake.echo_in_errors and fake.requests:
                    last = fake.requests[-1]
                    quoted = (last.get("messages") or [{}])[-1].get("content")
                    message = f"{message} (got {quoted!r}, {last['_authorization']!r})"
                error = {"message": message, "type": "fake_error", "code": code}
                self._json(status, {"error": error}, headers)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._error(400, "bad json", None)
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, "not found", None)
                    return
                body = {**body, "_authorization": self.headers.get("Authorization", "")}
                mode = fake._next_mode(body)
                if fake.latency_ms:
                    time.sleep(fake.latency_ms / 1000)
                if mode == "rate_limit":
                    self._error(
                        429, "slow down", "rate_limit_exceeded", {"Retry-After": fake.retry_after}
                    )
                elif mode == "server_error":
                    self._error(500, "boom", None)
                elif mode == "unauthorized":
                    self._error(401, "Incorrect API key provided", "invalid_api_key")
                elif mode == "context_length":
                    self._error(400, "too long", "context_length_exceeded")
                elif mode == "hang":
                    fake._stopping.wait(fake.hang_s)
                    self._error(500, "gave up hanging", None)
                elif body.get("stream"):
                    self._stream(body, mode)
                elif mode == "malformed":
                    data = b'{"id": "x", "choices": [ this is not json'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._complete(body)

            def _usage(self, body: dict) -> dict:
                prompt = sum(_count_tokens(str(m.get("content") or "")) for m in body["messages"])
                completion = _count_tokens(fake.reply_text)
                return {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }

            def _complete(self, body: dict) -> None:
                message: dict[str, Any] = {"role": "assistant", "content": fake.reply_text}
                finish_reason = "stop"
                if fake.reply_tool_calls:
                    message = {"role": "assistant", "content": None}
                    message["tool_calls"] = fake.reply_tool_calls
                    finish_reason = "tool_calls"
                self._json(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": finish_reason,
                            }
                        ],
                        "usage": self._usage(body),
                    },
                )

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _event(self, payload: dict | str) -> None:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                self._chunk(f"data: {text}\n\n".encode())

            def _stream(self, body: dict, mode: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                model = body.get("model", "fake")
                base = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                }
                words = fake.reply_text.split(" ")
                pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
                try:
                    for i, piece in enumerate(pieces):
                        if i == 2 and mode == "malformed":
                            self._chunk(b"data: {this is not json\n\n")
                            self._chunk(b"0\r\n\r\n")
                            return
                        if i == 2 and mode == "close_mid_stream":
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        delta = (
                            {"role": "assistant", "content": piece}
                            if i == 0
                            else {"content": piece}
                        )
                        self._event(
                            {
                                **base,
                                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                            }
                        )
                        if fake.chunk_delay_ms:
                            time.sleep(fake.chunk_delay_ms / 1000)
                    self._event(
                        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    )
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self._event({**base, "choices": [], "usage": self._usage(body)})
                    self._event("[DONE]")
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    fake.stream_closed_early.set()

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before answering")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="delay between chunks")
    parser.add_argument("--mode", default="ok", choices=sorted(MODES))
    args = parser.parse_args()
    fake = FakeOpenAI(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
    )
    fake.mode = args.mode
    print(f"fake OpenAI server on {fake.base_url} (mode {fake.mode})", flush=True)
    try:
        fake._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


if __name__ == "__main__":
    main()
