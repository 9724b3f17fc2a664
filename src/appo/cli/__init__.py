"""The `appo` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import typer

from appo import __version__

app = typer.Typer(
    name="appo",
    help="Train tool-using reasoning agents with APPO (and GRPO / ARPO baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"appo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train tool-using reasoning agents with APPO (and GRPO / ARPO baselines)."""


def _register() -> None:
    from appo.cli import (
        config_cmd,
        data_cmd,
        eval_cmd,
        generate_cmd,
        model_cmd,
        search_cmd,
        sft_cmd,
        tool_cmd,
        train_cmd,
    )

    app.add_typer(config_cmd.app, name="config")
    app.add_typer(model_cmd.app, name="model")
    app.add_typer(data_cmd.app, name="data")
    app.add_typer(tool_cmd.app, name="tool")
    app.add_typer(search_cmd.app, name="search")
    app.command("sft")(sft_cmd.sft)
    app.command("train")(train_cmd.train)
    app.command("report")(train_cmd.report)
    app.command("generate")(generate_cmd.generate)
    app.add_typer(eval_cmd.app, name="eval")


_register()


def main() -> None:
    # transformers' per-file loading bars drown our own progress display.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    app()
