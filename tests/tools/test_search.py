from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from appo.tools import SearchTool, ToolError, build_index, corpus_from_search_cache, normalize_query
from appo.tools.search import (
    NO_RESULTS,
    BrightDataProvider,
    CacheProvider,
    LocalProvider,
    SearxngProvider,
    SerperProvider,
    format_snippets,
)

# ---------------------------------------------------------------------------------- formatting


def test_format_snippets_like_reference():
    out = format_snippets([" a ", "", "b", "a", "c" * 50], top_k=3, result_length=10)
    assert out == "Page 1: a\nPage 2: b\nPage 3: cccccccccc"
    assert format_snippets([]) == NO_RESULTS
    assert normalize_query('who wrote "The Hobbit"') == "who wrote The Hobbit"


# ---------------------------------------------------------------------------------- cache


def test_cache_hits_on_real_keys_of_the_shared_cache(search_cache_file):
    data = json.loads(search_cache_file.read_text(encoding="utf-8"))
    tool = SearchTool(providers=["cache"], cache_file=str(search_cache_file), live_cache=False)
    keys = [k for k in data if k == k.strip() and len(k) < 300]
    sample = keys[:: max(1, len(keys) // 25)]
    for key in sample:
        r = tool.run(key)
        assert r.ok and r.metadata["cache_hit"] and r.metadata["provider"] == "cache"
        assert r.text == data[key]
    # the reference normalisation: double quotes are removed before the lookup
    key = sample[0]
    assert tool.run(f'"{key}"').text == data[key]
    # offline cache-only mode: a miss is "No search results found.", not an error
    r = tool.run("a query nobody ever asked 0xdeadbeef")
    assert r.ok and r.text == NO_RESULTS and not r.metadata["cache_hit"]


def test_live_results_go_to_an_append_only_sqlite_cache(tmp_path):
    db = tmp_path / "live.sqlite"
    cache = CacheProvider(None, db)
    assert cache.search("q").status == "miss"
    assert cache.store('say "hi"', "serper", "Page 1: first")
    assert not cache.store("say hi", "serper", "Page 1: second")  # never overwritten
    ans = cache.search("say hi")
    assert (
        ans.status == "hit"
        and ans.text == "Page 1: first"
        and ans.metadata["cache_source"] == "sqlite:serper"
    )
    cache.close()
    rows = sqlite3.connect(db).execute("SELECT query, provider, text FROM results").fetchall()
    assert rows == [("say hi", "serper", "Page 1: first")]


def test_missing_cache_file_is_a_clear_error(tmp_path):
    with pytest.raises(ToolError, match="cache_file not found"):
        SearchTool(cache_file=str(tmp_path / "nope.json"))


# ---------------------------------------------------------------------------------- local BM25


def test_bm25_returns_the_right_document(tmp_path):
    corpus = tmp_path / "c.jsonl"
    docs = [
        {"id": "a", "title": "Volcanoes", "text": "Lava and magma erupt from volcanoes such as Etna."},
        {"id": "b", "title": "Bread", "text": "Bakers knead dough, let it rise with yeast and bake loaves."},
        {
            "id": "c",
            "title": "Comets",
            "text": "A comet has an icy nucleus and a tail pointing away from the Sun.",
        },
    ]
    corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    p = LocalProvider(corpus, top_k=2, result_length=40)
    ans = p.search("why does dough rise? yeast")
    assert ans.status == "hit" and ans.metadata["doc_ids"][0] == "b"
    assert ans.text.startswith("Page 1: Bread: Bakers knead dough")
    assert all(len(line) <= len("Page 1: ") + 40 for line in ans.text.splitlines())
    assert p.search("quantum chromodynamics").status == "miss"
    # the same through a saved index directory
    out = build_index(corpus, tmp_path / "idx")
    ans2 = LocalProvider(out, top_k=1).search("icy tail of a comet")
    assert ans2.metadata["doc_ids"] == ["c"]


def test_demo_corpus_is_the_offline_default():
    tool = SearchTool(live_cache=False)
    r = tool.run("Who discovered penicillin?")
    assert r.ok and r.metadata["provider"] == "local" and "Alexander Fleming" in r.text.splitlines()[0]
    assert r.text.startswith("Page 1: ")


def test_corpus_built_from_the_shared_search_cache(search_cache_file, tmp_path):
    jsonl = tmp_path / "sc.jsonl"
    n = corpus_from_search_cache(search_cache_file, jsonl)
    assert n > 1000
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    target = docs[len(docs) // 2]
    tool = SearchTool(providers=["local"], corpus=str(jsonl), top_k=3, result_length=5000, live_cache=False)
    r = tool.run(target["text"][:300])
    assert target["text"] in r.text.splitlines()[0]


def test_bad_corpus_lines_are_reported(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\nnot json\n')
    with pytest.raises(ToolError, match=r"bad\.jsonl:2"):
        build_index(bad, tmp_path / "i")


# ---------------------------------------------------------------------------------- web (stub server)


class _Stub:
    """Scripted HTTP server on 127.0.0.1: records requests, answers from a queue of (status, body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.requests.append(
                    {
                        "method": self.command,
                        "path": urlparse(self.path).path,
                        "query": parse_qs(urlparse(self.path).query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": json.loads(body) if body else None,
                    }
                )
                status, payload = stub.script.pop(0) if stub.script else (500, {"error": "no script"})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub() -> Iterator[_Stub]:
    s = _Stub()
    yield s
    s.close()


FAST = {"backoff": 0.01, "requests_per_second": None, "timeout": 2.0}


def test_brightdata_request_shape(stub, monkeypatch):
    monkeypatch.setenv("BRIGHTDATA_API_KEY", "bd-key")
    monkeypatch.setenv("BRIGHTDATA_ZONE", "serp_zone")
    stub.script = [
        (200, {"organic": [{"description": "  one "}, {"description": "one"}, {"description": "two"}]})
    ]
    p = BrightDataProvider(base_url=stub.url, **FAST)
    ans = p.search("capital of France")
    assert ans.status == "hit" and ans.text == "Page 1: one\nPage 2: two"
    req = stub.requests[0]
    assert req["method"] == "POST" and req["path"] == "/request"
    assert req["headers"]["authorization"] == "Bearer bd-key"
    assert req["json"]["zone"] == "serp_zone" and req["json"]["format"] == "raw"
    bing = urlparse(req["json"]["url"])
    q = parse_qs(bing.query)
    assert bing.netloc == "www.bing.com" and q["q"] == ["capital of France"] and q["brd_json"] == ["1"]
    assert q["mkt"] == ["en-US"]
    assert parse_qs(urlparse(p.bing_url("北京的人口")).query)["mkt"] == ["zh-CN"]


def test_serper_request_shape_and_retry_on_5xx(stub):
    stub.script = [(503, {}), (429, {}), (200, {"organic": [{"snippet": "s1"}, {"snippet": "s2"}]})]
    p = SerperProvider(api_key="sp-key", base_url=stub.url, max_retries=3, top_k=5, **FAST)
    ans = p.search("q1")
    assert ans.status == "hit" and ans.text == "Page 1: s1\nPage 2: s2" and ans.metadata["attempts"] == 3
    assert len(stub.requests) == 3
    req = stub.requests[-1]
    assert req["path"] == "/search" and req["headers"]["x-api-key"] == "sp-key"
    assert req["json"] == {"q": "q1", "num": 5}


def test_searxng_request_shape(stub):
    stub.script = [(200, {"results": [{"content": "c1"}, {"content": ""}]})]
    ans = SearxngProvider(base_url=stub.url, **FAST).search("hello world")
    assert ans.text == "Page 1: c1"
    req = stub.requests[0]
    assert req["method"] == "GET" and req["query"] == {"q": ["hello world"], "format": ["json"]}


def test_web_errors_retry_exhaustion_and_auth_failures(stub):
    stub.script = [(500, {})] * 2
    ans = SerperProvider(api_key="k", base_url=stub.url, max_retries=2, **FAST).search("q")
    assert ans.status == "error" and ans.retryable and "HTTP 500" in ans.message and len(stub.requests) == 2
    stub.requests.clear()
    stub.script = [(401, {"message": "bad key"})]
    ans = SerperProvider(api_key="wrong", base_url=stub.url, max_retries=3, **FAST).search("q")
    assert ans.status == "error" and not ans.retryable and "401" in ans.message and len(stub.requests) == 1
    # connection refused / timeouts are transient errors, never exceptions
    ans = SerperProvider(api_key="k", base_url="http://127.0.0.1:9", max_retries=2, **FAST).search("q")
    assert ans.status == "error" and ans.retryable


def test_missing_keys_make_providers_unavailable_not_crash(monkeypatch):
    for var in ("BRIGHTDATA_API_KEY", "BRIGHTDATA_ZONE", "SERPER_API_KEY", "SEARXNG_URL", "SEARXNG_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    tool = SearchTool(providers=["web"], live_cache=False)
    r = tool.run("anything")
    assert not r.ok and r.metadata["error_kind"] == "unavailable"
    assert "SERPER_API_KEY" in r.text and "BRIGHTDATA_API_KEY" in r.text and "SEARXNG_URL" in r.text


def test_tool_falls_through_providers_and_stores_live_results(stub, tmp_path, search_cache_file):
    stub.script = [(200, {"organic": [{"snippet": "fresh result"}]})]
    db = tmp_path / "live.sqlite"
    tool = SearchTool(
        providers=["cache", "serper"],
        cache_file=str(search_cache_file),
        live_cache=str(db),
        web={"serper": {"api_key": "k", "base_url": stub.url, **FAST}},
    )
    r = tool.run("a brand new query")
    assert (
        r.ok
        and r.metadata["provider"] == "serper"
        and r.metadata["stored"]
        and r.text == "Page 1: fresh result"
    )
    again = tool.run("a brand new query")  # second time: from the sqlite cache, no HTTP request
    assert again.metadata["cache_hit"] and again.text == r.text and len(stub.requests) == 1
    tool.close()


def test_bad_provider_names_and_reference_aliases(monkeypatch):
    with pytest.raises(ToolError, match="unknown provider"):
        SearchTool(providers=["bing"])
    t = SearchTool(providers=["cache", "brightdata"], max_results=3, api_key="x", zone="z", live_cache=False)
    bd = t.providers[1]
    assert isinstance(bd, BrightDataProvider) and bd.api_key == "x" and bd.zone == "z" and t.top_k == 3
    info = t.info()
    assert [p["name"] for p in info["providers"]] == ["cache", "brightdata"]


def test_search_cache_file_path_fixture_is_real(search_cache_file):
    assert isinstance(search_cache_file, Path) and search_cache_file.stat().st_size > 100_000
