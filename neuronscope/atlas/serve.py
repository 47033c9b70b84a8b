"""`neuronscope atlas serve`: the atlas on 127.0.0.1, plus /api/search (the CLI's search).

Files come through the Store, so an atlas in a bucket serves as well as one on disk; the run's
transcripts are served beside it, where the pages' relative links point."""

from __future__ import annotations

import json
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .. import layout
from ..errors import NeuronScopeError, StoreError
from ..store import Store
from .build import atlas_store, build_atlas, load_index
from .search import AtlasIndex

HOST = "127.0.0.1"
DEFAULT_K, MAX_K = 10, 200
TYPES = {".js": "text/javascript", ".jsonl": "text/plain", ".json": "application/json"}


def _handler(run: Store, atlas: Store, searcher):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/api/search":
                return self._search(parse_qs(url.query))
            key = unquote(url.path).lstrip("/") or "index.html"
            store = run if key.startswith(layout.prefix(layout.TRANSCRIPTS)) else atlas
            try:
                body = store.read_bytes(key)
            except StoreError:
                return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            ext = "." + key.rsplit(".", 1)[-1]
            self._send(
                HTTPStatus.OK, body, TYPES.get(ext) or mimetypes.guess_type(key)[0] or "application/octet-stream"
            )

        def _search(self, params):
            query = (params.get("q") or [""])[0].strip()
            try:
                k = min(max(int((params.get("k") or [DEFAULT_K])[0]), 1), MAX_K)
            except ValueError:
                return self._send(
                    HTTPStatus.BAD_REQUEST, b'{"error": "k must be a whole number"}\n', "application/json"
                )
            hits = [h.as_dict() for h in searcher().search(query, k)] if query else []
            self._send(HTTPStatus.OK, json.dumps({"query": query, "hits": hits}).encode(), "application/json")

        def _send(self, status, body: bytes, ctype: str):
            self.send_response(status)
            self.send_header("Content-Type", ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the CLI prints the address once
            pass

    return Handler


def start(run_uri: str, out: str | None = None, port: int = 8000, progress=None) -> ThreadingHTTPServer:
    """A server in a daemon thread (``server.server_address`` has its port; ``shutdown()`` stops
    it). The atlas is built first when it has no index.html."""
    run = Store.open(run_uri)
    atlas = atlas_store(run, out)
    if not atlas.exists("index.html"):
        build_atlas(run_uri, out, progress)
    lock = threading.Lock()
    loaded: list[AtlasIndex] = []

    def searcher():
        # loaded at the first search (the embedder takes seconds); rebuilt if the run changed since
        with lock:
            if not loaded:
                loaded.append(load_index(run, atlas, progress))
            return loaded[0]

    try:
        server = ThreadingHTTPServer((HOST, port), _handler(run, atlas, searcher))
    except OSError as e:
        raise NeuronScopeError(f"cannot serve on {HOST}:{port}: {e.strerror or e}") from e
    threading.Thread(target=server.serve_forever, name="atlas-serve", daemon=True).start()
    return server
