"""`appo search …`: build local BM25 indexes for the offline search provider."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

from appo.cli.common import fail

app = typer.Typer(
    help="Local search index (BM25) for the offline `local` search provider.", no_args_is_help=True
)


@app.command("index")
def index(
    corpus: Path = typer.Argument(
        ...,
        help="jsonl corpus of {id, title, text}, or a reference search_cache.json (pages become documents).",
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Index directory (default: CORPUS path + '.index')."),
) -> None:
    """Build a BM25 index; use it with params.corpus=OUT of the search tool."""
    from appo.tools import ToolError, build_index, corpus_from_search_cache

    if not corpus.exists():
        raise fail(f"corpus not found: {corpus}")
    out = out or corpus.with_name(corpus.name + ".index")
    try:
        if corpus.suffix == ".json":
            with tempfile.TemporaryDirectory() as tmp:
                jsonl = Path(tmp) / "corpus.jsonl"
                n = corpus_from_search_cache(corpus, jsonl)
                if n == 0:
                    raise fail(f"{corpus}: no 'Page i:' snippets found")
                build_index(jsonl, out)
        else:
            build_index(corpus, out)
    except (ToolError, json.JSONDecodeError, OSError) as exc:
        raise fail(str(exc)) from None
    meta = json.loads((out / "appo_index.json").read_text())
    typer.echo(f"indexed {meta['documents']} documents -> {out}")
    typer.echo(f"use: actor_rollout_ref.rollout.tools.tool_instances.search.params.corpus={out}")


@app.command("query")
def query(
    text: str = typer.Argument(..., help="Query."),
    corpus: Path = typer.Option(
        None, "--corpus", help="jsonl corpus or index directory (default: demo corpus)."
    ),
    top_k: int = typer.Option(5, "--top-k", help="Number of results."),
) -> None:
    """Query a local corpus/index directly (BM25), formatted as the search tool does."""
    from appo.tools import ToolError
    from appo.tools.search import LocalProvider

    try:
        ans = LocalProvider(corpus, top_k=top_k).search(text)
    except ToolError as exc:
        raise fail(str(exc)) from None
    typer.echo(ans.text or "No search results found.")
