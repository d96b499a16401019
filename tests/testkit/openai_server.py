"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests of anything that talks to a remote user model.

The fake sits exactly at the boundary a CPU test cannot cross (a hosted chat model): the client under test runs
unchanged (real ``openai`` client, real HTTP on an ephemeral loopback port), only the model behind the endpoint is
replaced by ``responder``. Faults are chosen per request, so a test can script "fail twice, then answer".

Modes (``server.mode`` is the default, ``server.script([...])`` queues modes for the next requests):

- ``ok``: 200 with a chat completion whose content is ``responder(request_json)``.
- ``hang``: read the request, then answer nothing until the server shuts down (a client timeout must fire).
- ``http500``: 500 with an OpenAI-style error body.
- ``http401``: 401 with an OpenAI-style error body, as for a rejected key.
- ``malformed_json``: 200, ``Content-Type: application/json``, a body that is not JSON.
- ``no_choices``: 200 with valid JSON that has no ``choices``.
- ``empty_content``: 200 with a chat completion whose content is the empty string.

Usage::

    with FakeOpenAIServer(lambda request: "I want to fly on Monday.") as server:
        server.script(["http500", "ok"])
        ...  # point the client at server.base_url
        assert server.max_in_flight <= 4
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeOpenAIServer", "MODES"]

MODES = ("ok", "hang", "http500", "http401", "malformed_json", "no_choices", "empty_content")

Responder = Callable[[dict], str]


def _default_responder(request: dict) -> str:
    """Answer with a fixed sentence that names the last message, so a test can see which chat was sent."""
    messages = request.get("messages") or [{}]
    return f"fake user reply to: {messages[-1].get('content', '')}"


class FakeOpenAIServer:
    """``POST /v1/chat/completions`` served from a background thread; a context manager that shuts down cleanly.

    Properties read by tests: ``base_url``, ``requests`` (JSON bodies received, in arrival order), ``headers``
    (one lower-cased header dict per request, e.g. to check ``authorization`` was sent), ``max_in_flight``.
    """

    def __init__(self, responder: Responder | None = None):
        self.responder: Responder = responder or _default_responder
        self.mode: str = "ok"
        self._script: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        # Set once at shutdown: every "hang" request waits on it, so closing the server releases them all.
        self._released = threading.Event()
        self._requests: list[dict] = []
        self._headers: list[dict[str, str]] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads are joined at close, so no request outlives the server.
        self._httpd.daemon_threads = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai-server", daemon=True)
        self._thread.start()
        self._closed = False

    # ----------------------------------------------------------------------------------------------- test API

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(h) for h in self._headers]

    @property
    def max_in_flight(self) -> int:
        """The largest number of requests the server held at once (received, not yet answered)."""
        with self._lock:
            return self._max_in_flight

    def script(self, modes: Iterable[str]) -> None:
        """Queue one mode per upcoming request; once the queue is empty, ``self.mode`` applies again."""
        modes = list(modes)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown fake-server mode(s) {unknown}; known: {', '.join(MODES)}")
        with self._lock:
            self._script.extend(modes)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads, now that none can be waiting
        self._thread.join()

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------- internals

    def _next_mode(self) -> str:
        with self._lock:
            mode = self._script.popleft() if self._script else self.mode
        if mode not in MODES:
            raise ValueError(f"unknown fake-server mode {mode!r}; known: {', '.join(MODES)}")
        return mode

    def _enter(self, body: dict, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _completion(self, body: dict, content: str) -> dict:
        return {
            "id": f"chatcmpl-fake-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so closing the server never waits on an idle keep-alive socket.
            protocol_version = "HTTP/1.0"

            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                pass  # stderr access logs would only clutter test output

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, json.dumps({"error": {"message": "request body is not JSON"}}).encode())
                    return
                server._enter(body, {k.lower(): v for k, v in self.headers.items()})
                try:
                    self._answer(body)
                finally:
                    server._leave()

            def _answer(self, body: dict) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                    return
                mode = server._next_mode()
                if mode == "hang":
                    server._released.wait()
                    return  # the connection closes without a response
                if mode == "http500":
                    self._send(500, json.dumps({"error": {"message": "fake internal error", "type": "server_error"}}).encode())
                    return
                if mode == "http401":
                    self._send(401, json.dumps({"error": {"message": "fake: invalid key", "type": "invalid_request_error"}}).encode())
                    return
                if mode == "malformed_json":
                    self._send(200, b'{"id": "chatcmpl-broken", "choices": [')
                    return
                if mode == "no_choices":
                    self._send(200, json.dumps({"id": "chatcmpl-none", "object": "chat.completion"}).encode())
                    return
                if mode == "empty_content":
                    self._send(200, json.dumps(server._completion(body, "")).encode())
                    return
                try:
                    content = server.responder(body)
                except Exception as exc:  # a broken responder must surface as a failed request, not a hang
                    self._send(500, json.dumps({"error": {"message": f"responder raised {type(exc).__name__}"}}).encode())
                    return
                self._send(200, json.dumps(server._completion(body, content)).encode())

        return Handler
