"""A misbehaving OpenAI-style LLM server for the failure tests (no tests here).

The first path segment picks the misbehaviour: ``http://127.0.0.1:PORT/<mode>/v1`` with mode
``echo401`` (401 quoting the Authorization header, as some servers do), ``error500``, ``garbage``
(200 with an HTML page), ``wrongjson`` (200 with JSON of another shape) or ``hang`` (never answers
until the server stops)."""

from __future__ import annotations

import http.server
import threading

import pytest


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    release: threading.Event

    def _answer(self, code: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        mode = self.path.strip("/").split("/")[0]
        if mode == "hang":
            self.release.wait()
            return
        answers = {
            "echo401": (401, f'{{"error": "invalid api key {self.headers.get("Authorization")}"}}'),
            "error500": (500, '{"error": "internal error"}'),
            "garbage": (200, "<html><body>502 Bad Gateway</body></html>", "text/html"),
            "wrongjson": (200, '{"result": "ok"}'),
        }
        self._answer(*answers[mode])

    def log_message(self, *args):
        pass


@pytest.fixture
def bad_llm_server():
    """The server's root URL; append '/<mode>/v1' for a base_url."""
    handler = type("Handler", (_Misbehaving,), {"release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    handler.release.set()
    server.shutdown()
