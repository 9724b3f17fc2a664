"""Search tool: providers behind one interface, tried in the configured order.

Providers
---------
``cache``
    The reference JSON cache (``{query: formatted result}``; key = query with every ``"`` removed,
    exact match) plus an append-only SQLite cache of every live (web) result, so repeated training
    runs cost nothing.
``local``
    BM25 (``bm25s``) over a local corpus (jsonl of ``{id, title, text}``) or an index directory built
    by :func:`build_index` / ``appo search index``. Without a corpus: the embedded demo corpus.
``brightdata`` / ``serper`` / ``searxng`` (``web`` = all three, in that order)
    HTTP providers (httpx) with keys from environment variables, rate limit, retries with
    exponential backoff and a timeout. Without credentials a provider is *unavailable* (reported in
    the result's metadata), never a crash.

Formatting (all providers): unique non-empty snippets, first ``top_k``, each cut to
``result_length`` characters, lines ``Page i: snippet``; nothing found → ``No search results found.``
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from appo.tools.base import Session, Tool, ToolError, ToolResult

__all__ = [
    "NO_RESULTS",
    "BrightDataProvider",
    "CacheProvider",
    "LocalProvider",
    "ProviderAnswer",
    "SearchProvider",
    "SearchTool",
    "SearxngProvider",
    "SerperProvider",
    "build_index",
    "corpus_from_search_cache",
    "demo_corpus_path",
    "format_snippets",
    "load_corpus",
    "normalize_query",
]

NO_RESULTS = "No search results found."
WEB_PROVIDERS = ("brightdata", "serper", "searxng")


def normalize_query(query: str) -> str:
    """Cache key of the reference: the query with every double quote removed (nothing else)."""
    return query.replace('"', "")


def format_snippets(snippets: Iterable[str], top_k: int = 10, result_length: int = 1000) -> str:
    """``Page i: …`` lines from unique non-empty snippets (order kept); ``NO_RESULTS`` if none."""
    seen: set[str] = set()
    kept: list[str] = []
    for s in snippets:
        s = (s or "").strip()
        if not s or s in seen:
            continue
        seen.add(s)
        kept.append(s[:result_length])
        if len(kept) >= top_k:
            break
    if not kept:
        return NO_RESULTS
    return "\n".join(f"Page {i}: {s}" for i, s in enumerate(kept, 1))


@dataclass
class ProviderAnswer:
    """``status``: ``hit`` (text is the answer), ``miss`` (nothing here, try the next provider),
    ``unavailable`` (not configured), ``error`` (failed; ``retryable`` if transient)."""

    status: str
    text: str = ""
    message: str = ""
    retryable: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


class SearchProvider:
    name = "provider"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def search(self, query: str) -> ProviderAnswer:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------------------------
class CacheProvider(SearchProvider):
    """Reference JSON cache (read-only, reloaded when the file changes) + append-only SQLite cache."""

    name = "cache"

    def __init__(
        self, cache_file: str | os.PathLike | None = None, live_cache: str | os.PathLike | None = None
    ):
        self.cache_file = Path(cache_file).expanduser() if cache_file else None
        self.live_cache = Path(live_cache).expanduser() if live_cache else None
        self._json: dict[str, str] = {}
        self._json_mtime: float | None = None
        self._json_checked = 0.0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.cache_file is not None and not self.cache_file.is_file():
            raise ToolError(f"search cache_file not found: {self.cache_file}")

    def _load_json(self) -> None:
        if self.cache_file is None:
            return
        now = time.monotonic()
        if self._json_mtime is not None and now - self._json_checked < 15.0:
            return
        self._json_checked = now
        mtime = self.cache_file.stat().st_mtime
        if self._json_mtime is not None and mtime <= self._json_mtime:
            return
        with open(self.cache_file, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ToolError(f"search cache_file {self.cache_file} is not a JSON object {{query: result}}")
        self._json = {str(k): str(v) for k, v in data.items()}
        self._json_mtime = mtime

    def _conn(self) -> sqlite3.Connection | None:
        if self.live_cache is None:
            return None
        if self._db is None:
            self.live_cache.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.live_cache), check_same_thread=False, timeout=30)
            db.execute(
                "CREATE TABLE IF NOT EXISTS results (query TEXT NOT NULL, provider TEXT NOT NULL, "
                "text TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (query, provider))"
            )
            db.commit()
            self._db = db
        return self._db

    def __len__(self) -> int:
        with self._lock:
            self._load_json()
            return len(self._json)

    def lookup(self, query: str) -> tuple[str, str] | None:
        """(text, source) for a normalised query, or None."""
        key = normalize_query(query)
        with self._lock:
            self._load_json()
            for k in (key, key.strip()):
                if k in self._json:
                    return self._json[k], "json"
            db = self._conn() if self.live_cache is not None and self.live_cache.exists() else None
            if db is not None:
                row = db.execute(
                    "SELECT text, provider FROM results WHERE query = ? ORDER BY created LIMIT 1", (key,)
                ).fetchone()
                if row is not None:
                    return row[0], f"sqlite:{row[1]}"
        return None

    def store(self, query: str, provider: str, text: str) -> bool:
        """Append a live result (never overwrites). Returns True when a row was added."""
        with self._lock:
            db = self._conn()
            if db is None:
                return False
            cur = db.execute(
                "INSERT OR IGNORE INTO results (query, provider, text, created) VALUES (?, ?, ?, ?)",
                (normalize_query(query), provider, text, time.time()),
            )
            db.commit()
            return cur.rowcount > 0

    def search(self, query: str) -> ProviderAnswer:
        hit = self.lookup(query)
        if hit is None:
            return ProviderAnswer("miss", message="not in cache")
        return ProviderAnswer("hit", hit[0], metadata={"cache_hit": True, "cache_source": hit[1]})

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# ----------------------------------------------------------------------------------------------
# local BM25
# ----------------------------------------------------------------------------------------------
def demo_corpus_path() -> Path:
    """Path of the small corpus shipped with the package (``appo/tools/data/demo_corpus.jsonl``)."""
    return Path(str(resources.files("appo.tools") / "data" / "demo_corpus.jsonl"))


def load_corpus(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a jsonl corpus of ``{id, title, text}``; errors name the file and line."""
    docs: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ToolError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ToolError(f"{path}:{lineno}: each line must be an object with a string 'text'")
            docs.append(
                {"id": str(obj.get("id", len(docs))), "title": str(obj.get("title", "")), "text": obj["text"]}
            )
    if not docs:
        raise ToolError(f"{path}: corpus is empty")
    return docs


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), return_ids=False, stopwords="en", show_progress=False)


def _doc_text(doc: Mapping[str, str]) -> str:
    title = doc.get("title", "")
    return f"{title}. {doc['text']}" if title else doc["text"]


class _Bm25Index:
    def __init__(self, docs: list[dict[str, str]], retriever: Any = None) -> None:
        import bm25s

        self.docs = docs
        if retriever is None:
            retriever = bm25s.BM25()
            retriever.index(_tokenize([_doc_text(d) for d in docs]), show_progress=False)
        self.retriever = retriever
        self.lock = threading.Lock()

    def query(self, q: str, k: int) -> list[tuple[dict[str, str], float]]:
        tokens = _tokenize([q])
        if not tokens or not tokens[0]:
            return []
        k = max(1, min(k, len(self.docs)))
        with self.lock:
            idx, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [(self.docs[int(i)], float(s)) for i, s in zip(idx[0], scores[0], strict=True) if s > 0]


def build_index(corpus: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Build a BM25 index directory (``bm25s`` files + ``docs.jsonl`` + ``appo_index.json``)."""
    docs = load_corpus(corpus)
    index = _Bm25Index(docs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index.retriever.save(str(out / "bm25"))
    with open(out / "docs.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    meta = {"format": "appo-bm25/1", "documents": len(docs), "source": str(Path(corpus).resolve())}
    (out / "appo_index.json").write_text(json.dumps(meta, indent=2))
    return out


def corpus_from_search_cache(cache_file: str | os.PathLike, out_jsonl: str | os.PathLike) -> int:
    """Turn a reference ``search_cache.json`` into a jsonl corpus: one document per ``Page i:`` snippet
    (title = the query that returned it). Returns the number of documents written."""
    with open(cache_file, encoding="utf-8") as fh:
        data = json.load(fh)
    page = re.compile(r"^Page \d+: ?", re.MULTILINE)
    seen: set[str] = set()
    n = 0
    with open(out_jsonl, "w", encoding="utf-8") as out:
        for q, value in data.items():
            if len(q) > 400:  # garbage keys of the reference (whole prompts)
                continue
            for snippet in page.split(str(value)):
                snippet = snippet.strip()
                if not snippet or snippet == NO_RESULTS or snippet in seen:
                    continue
                seen.add(snippet)
                out.write(
                    json.dumps({"id": f"sc{n}", "title": q, "text": snippet}, ensure_ascii=False) + "\n"
                )
                n += 1
    return n


_INDEX_CACHE: dict[tuple[str, float], _Bm25Index] = {}
_INDEX_LOCK = threading.Lock()


def _load_index(path: Path) -> _Bm25Index:
    key_path = path / "appo_index.json" if path.is_dir() else path
    if not key_path.exists():
        raise ToolError(
            f"search corpus not found: {path} (a jsonl file or a directory from `appo search index`)"
        )
    key = (str(path.resolve()), key_path.stat().st_mtime)
    with _INDEX_LOCK:
        idx = _INDEX_CACHE.get(key)
        if idx is None:
            if path.is_dir():
                import bm25s

                idx = _Bm25Index(load_corpus(path / "docs.jsonl"), bm25s.BM25.load(str(path / "bm25")))
            else:
                idx = _Bm25Index(load_corpus(path))
            _INDEX_CACHE[key] = idx
        return idx


class LocalProvider(SearchProvider):
    """BM25 over a local corpus; results are ``title: text`` snippets."""

    name = "local"

    def __init__(self, corpus: str | os.PathLike | None = None, top_k: int = 10, result_length: int = 1000):
        self.corpus = Path(corpus).expanduser() if corpus else demo_corpus_path()
        if not self.corpus.exists():
            raise ToolError(f"search corpus not found: {self.corpus}")
        self.top_k = top_k
        self.result_length = result_length

    def search(self, query: str) -> ProviderAnswer:
        hits = _load_index(self.corpus).query(query, self.top_k)
        if not hits:
            return ProviderAnswer("miss", message="no matching document in the local corpus")
        snippets = [f"{d['title']}: {d['text']}" if d["title"] else d["text"] for d, _ in hits]
        return ProviderAnswer(
            "hit",
            format_snippets(snippets, self.top_k, self.result_length),
            metadata={"doc_ids": [d["id"] for d, _ in hits]},
        )


# ----------------------------------------------------------------------------------------------
# web
# ----------------------------------------------------------------------------------------------
class _RateLimiter:
    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second and per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class _HttpProvider(SearchProvider):
    """Shared HTTP machinery: httpx client, rate limit, retries with exponential backoff."""

    key_env = ""
    default_base_url = ""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        top_k: int = 10,
        result_length: int = 1000,
        timeout: float = 20.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        requests_per_second: float | None = 5.0,
        api_key_env: str | None = None,
    ) -> None:
        import httpx

        self.api_key_env = api_key_env or self.key_env
        self.api_key = api_key or os.environ.get(self.api_key_env, "") or None
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.top_k, self.result_length = top_k, result_length
        self.max_retries = max(1, int(max_retries))
        self.backoff = backoff
        self.limiter = _RateLimiter(requests_per_second)
        self.client = httpx.Client(timeout=timeout)

    def available(self) -> tuple[bool, str]:
        if not self.api_key:
            return False, f"{self.name}: no API key (set the environment variable {self.api_key_env})"
        return True, ""

    def _request(self, query: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def _snippets(self, payload: Any) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def search(self, query: str) -> ProviderAnswer:
        import httpx

        ok, why = self.available()
        if not ok:
            return ProviderAnswer("unavailable", message=why)
        last = ""
        for attempt in range(self.max_retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.limiter.wait()
            try:
                resp = self._request(query)
            except httpx.HTTPError as exc:
                last = f"{self.name}: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"{self.name}: HTTP {resp.status_code}"
                continue
            if resp.status_code != 200:
                return ProviderAnswer(
                    "error",
                    message=f"{self.name}: HTTP {resp.status_code}: {resp.text[:200]}",
                    retryable=False,
                )
            try:
                payload = resp.json()
                snippets = self._snippets(payload)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                return ProviderAnswer("error", message=f"{self.name}: unexpected response ({exc})")
            text = format_snippets(snippets, self.top_k, self.result_length)
            return ProviderAnswer("hit", text, metadata={"attempts": attempt + 1})
        return ProviderAnswer("error", message=f"{last} (after {self.max_retries} attempts)", retryable=True)

    def close(self) -> None:
        self.client.close()


class BrightDataProvider(_HttpProvider):
    """Bing results through the Bright Data SERP API (as the reference):
    ``POST {base_url}/request`` with ``{"zone", "url": <bing url with brd_json=1>, "format": "raw"}``.
    Env: ``BRIGHTDATA_API_KEY``, ``BRIGHTDATA_ZONE``."""

    name = "brightdata"
    key_env = "BRIGHTDATA_API_KEY"
    default_base_url = "https://api.brightdata.com"

    def __init__(self, zone: str | None = None, location: str = "us", **kw: Any) -> None:
        super().__init__(**kw)
        self.zone = zone or os.environ.get("BRIGHTDATA_ZONE", "")
        self.location = location

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if ok and not self.zone:
            return False, "brightdata: no zone (set BRIGHTDATA_ZONE or params.web.brightdata.zone)"
        return ok, why

    def bing_url(self, query: str) -> str:
        zh = any("\u4e00" <= ch <= "\u9fff" for ch in query)
        mkt, lang = ("zh-CN", "zh") if zh else ("en-US", "en")
        q = urllib.parse.urlencode(
            {"q": query, "mkt": mkt, "setLang": lang, "brd_json": 1, "cc": self.location}
        )
        return f"https://www.bing.com/search?{q}"

    def _request(self, query: str) -> Any:
        return self.client.post(
            f"{self.base_url}/request",
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
            json={"zone": self.zone, "url": self.bing_url(query), "format": "raw"},
        )

    def _snippets(self, payload: Any) -> list[str]:
        return [str(item.get("description", "")) for item in payload.get("organic", []) or []]


class SerperProvider(_HttpProvider):
    """Google results from serper.dev: ``POST {base_url}/search`` ``{"q", "num"}``, header
    ``X-API-KEY``. Env: ``SERPER_API_KEY``."""

    name = "serper"
    key_env = "SERPER_API_KEY"
    default_base_url = "https://google.serper.dev"

    def _request(self, query: str) -> Any:
        return self.client.post(
            f"{self.base_url}/search",
            headers={"X-API-KEY": str(self.api_key), "Content-Type": "application/json"},
            json={"q": query, "num": self.top_k},
        )

    def _snippets(self, payload: Any) -> list[str]:
        return [str(item.get("snippet", "")) for item in payload.get("organic", []) or []]


class SearxngProvider(_HttpProvider):
    """A SearXNG instance (JSON API enabled): ``GET {base_url}/search?q=…&format=json``.
    Env: ``SEARXNG_URL`` (required), ``SEARXNG_API_KEY`` (optional, sent as a bearer token)."""

    name = "searxng"
    key_env = "SEARXNG_API_KEY"

    def __init__(self, base_url: str | None = None, **kw: Any) -> None:
        super().__init__(base_url=base_url or os.environ.get("SEARXNG_URL", ""), **kw)

    def available(self) -> tuple[bool, str]:
        if not self.base_url:
            return False, "searxng: no instance URL (set the environment variable SEARXNG_URL)"
        return True, ""

    def _request(self, query: str) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return self.client.get(
            f"{self.base_url}/search", params={"q": query, "format": "json"}, headers=headers
        )

    def _snippets(self, payload: Any) -> list[str]:
        return [str(item.get("content", "")) for item in payload.get("results", []) or []]


_WEB_CLASSES: dict[str, type[_HttpProvider]] = {
    "brightdata": BrightDataProvider,
    "serper": SerperProvider,
    "searxng": SearxngProvider,
}


# ----------------------------------------------------------------------------------------------
# the tool
# ----------------------------------------------------------------------------------------------
class SearchTool(Tool):
    """``<search>query</search>``.

    Params: ``providers`` (order; names ``cache``, ``local``, ``brightdata``, ``serper``, ``searxng``,
    ``web`` = the three web ones), ``cache_file`` (reference JSON cache), ``live_cache`` (SQLite file
    for live results; default ``$APPO_CACHE_DIR/search_live.sqlite`` or
    ``~/.cache/appo/search_live.sqlite``, created only when a web result is stored; ``false`` = off),
    ``corpus`` (jsonl or index dir; default: embedded demo corpus), ``top_k``, ``result_length``,
    ``timeout``, ``max_retries``, ``backoff``, ``requests_per_second``, ``web`` (per-provider options:
    ``{serper: {base_url, api_key_env, …}, …}``). Reference aliases: ``max_results`` (= top_k),
    ``api_key``, ``zone``, ``location``, ``proxy_base_url`` (Bright Data), ``async_cache_write`` (ignored).
    """

    tag = "search"
    short_name = "search"

    def __init__(
        self,
        providers: Sequence[str] = ("cache", "local"),
        cache_file: str | None = None,
        live_cache: str | bool | None = None,
        corpus: str | None = None,
        top_k: int = 10,
        result_length: int = 1000,
        timeout: float = 20.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        requests_per_second: float | None = 5.0,
        web: Mapping[str, Mapping[str, Any]] | None = None,
        tag: str | None = None,
        # reference-compatible aliases
        max_results: int | None = None,
        api_key: str | None = None,
        zone: str | None = None,
        location: str | None = None,
        proxy_base_url: str | None = None,
        async_cache_write: bool | None = None,
    ) -> None:
        super().__init__(tag)
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        names: list[str] = []
        for p in providers:
            expanded = WEB_PROVIDERS if p == "web" else (p,)
            for q in expanded:
                if q not in ("cache", "local", *WEB_PROVIDERS):
                    raise ToolError(
                        f"search: unknown provider {q!r} (choose from cache, local, web, {', '.join(WEB_PROVIDERS)})"
                    )
                if q not in names:
                    names.append(q)
        if not names:
            raise ToolError("search: providers must not be empty")
        self.top_k = int(max_results if max_results is not None else top_k)
        self.result_length = int(result_length)
        web_opts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (web or {}).items()}
        unknown_web = set(web_opts) - set(WEB_PROVIDERS)
        if unknown_web:
            raise ToolError(f"search: unknown web provider(s) in params.web: {sorted(unknown_web)}")
        bd = web_opts.setdefault("brightdata", {})
        for key, val in (
            ("api_key", api_key),
            ("zone", zone),
            ("location", location),
            ("base_url", proxy_base_url),
        ):
            if val is not None:
                bd.setdefault(key, val)
        if live_cache is None:
            root = os.environ.get("APPO_CACHE_DIR") or str(Path.home() / ".cache" / "appo")
            live_cache = str(Path(root) / "search_live.sqlite")
        self.providers: list[SearchProvider] = []
        self.cache: CacheProvider | None = None
        for n in names:
            if n == "cache":
                self.cache = CacheProvider(cache_file, live_cache or None)
                self.providers.append(self.cache)
            elif n == "local":
                self.providers.append(LocalProvider(corpus, self.top_k, self.result_length))
            else:
                common = {
                    "top_k": self.top_k,
                    "result_length": self.result_length,
                    "timeout": timeout,
                    "max_retries": max_retries,
                    "backoff": backoff,
                    "requests_per_second": requests_per_second,
                }
                common.update(web_opts.get(n, {}))
                try:
                    self.providers.append(_WEB_CLASSES[n](**common))
                except TypeError as exc:
                    raise ToolError(f"search: bad options for web provider {n!r}: {exc}") from exc
        self._live_store = (
            self.cache
            if self.cache is not None
            else (
                CacheProvider(None, live_cache)
                if live_cache and any(n in WEB_PROVIDERS for n in names)
                else None
            )
        )

    def run(self, argument: str, session: Session | None = None) -> ToolResult:
        t0 = time.monotonic()
        # Search has no session state, so it never enters the session's call log (a retried search must
        # not shift the point where a branch forks the Python state).
        query = normalize_query(argument).strip()
        if not query:
            return ToolResult("Empty search query.", False, 0.0, {"error_kind": "empty_query"})
        reasons: list[str] = []
        retryable = False
        answered = False
        for p in self.providers:
            try:
                ans = p.search(query)
            except Exception as exc:  # a provider bug must not kill the rollout
                ans = ProviderAnswer("error", message=f"{p.name}: {type(exc).__name__}: {exc}")
            if ans.status == "hit":
                meta = {
                    "provider": p.name,
                    "cache_hit": bool(ans.metadata.pop("cache_hit", False)),
                    **ans.metadata,
                }
                if p.name in WEB_PROVIDERS and self._live_store is not None:
                    meta["stored"] = self._live_store.store(query, p.name, ans.text)
                if reasons:
                    meta["skipped"] = reasons
                return ToolResult(ans.text, True, time.monotonic() - t0, meta)
            if ans.status == "miss":
                answered = True
            retryable = retryable or ans.retryable
            reasons.append(f"{p.name}: {ans.status}" + (f" ({ans.message})" if ans.message else ""))
        latency = time.monotonic() - t0
        if answered and not retryable:
            return ToolResult(
                NO_RESULTS, True, latency, {"provider": None, "cache_hit": False, "skipped": reasons}
            )
        return ToolResult(
            "Search failed: " + "; ".join(reasons),
            False,
            latency,
            {
                "error_kind": "transient" if retryable else "unavailable",
                "retryable": retryable,
                "skipped": reasons,
            },
        )

    def info(self) -> dict[str, Any]:
        out = super().info()
        prov = []
        for p in self.providers:
            ok, why = p.available()
            d: dict[str, Any] = {"name": p.name, "available": ok}
            if why:
                d["reason"] = why
            if isinstance(p, CacheProvider):
                d["cache_file"] = str(p.cache_file) if p.cache_file else None
                d["live_cache"] = str(p.live_cache) if p.live_cache else None
            if isinstance(p, LocalProvider):
                d["corpus"] = str(p.corpus)
            if isinstance(p, _HttpProvider):
                d["base_url"] = p.base_url
            prov.append(d)
        out.update(providers=prov, top_k=self.top_k, result_length=self.result_length)
        return out

    def close(self) -> None:
        for p in self.providers:
            p.close()
        if self._live_store is not None and self._live_store is not self.cache:
            self._live_store.close()
