"""Fixtures of the evaluation tests: a scripted HF engine (real KV caches, batching, stop strings and
log-probs on a tiny model, token choice forced by a script), a tool runtime with python + local search,
and a stub OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

from appo.rollout.scripted import ScriptedEngine


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread is ~3× faster than oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def scripted_engine_class() -> type[ScriptedEngine]:
    return ScriptedEngine


@pytest.fixture(scope="session")
def tool_registry():
    """python (sandboxed, stateful) + search (local BM25 over the embedded demo corpus, no web)."""
    from appo.tools import build_tools

    registry = build_tools(
        {
            "call_limit": 5,
            "timeout": 30,
            "retry_count": 1,
            "tool_instances": {
                "python": {"class_path": "python", "params": {}},
                "search": {"class_path": "search", "params": {"providers": ["local"], "live_cache": False}},
            },
        }
    )
    yield registry
    registry.close()


@pytest.fixture(scope="session")
def tool_runtime(tool_registry):
    runtime = tool_registry.runtime()
    yield runtime
    runtime.close()


class StubServer:
    """A tiny HTTP server: ``handler(path, body) -> (status, json reply)``; requests are recorded."""

    def __init__(self, handler: Callable[[str, dict], tuple[int, dict]]) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append((self.path, body))
                status, reply = stub.handler(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub_server() -> Iterator[Callable[[Callable[[str, dict], tuple[int, dict]]], StubServer]]:
    servers: list[StubServer] = []

    def start(handler: Callable[[str, dict], tuple[int, dict]]) -> StubServer:
        servers.append(StubServer(handler))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
