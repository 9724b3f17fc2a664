"""`appo sft`: cold-start SFT on tool-use traces (ShareGPT / ARPO-SFT files or synthetic traces)."""

from __future__ import annotations

from pathlib import Path

import typer

from appo.cli.common import config_option, overrides_argument, resolve_config, user_errors


def sft(
    overrides: list[str] = overrides_argument(),
    config: str = config_option(),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last checkpoint in the output directory."
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="Run directory (default: sft.output_dir)."
    ),
) -> None:
    """Cold-start SFT: loss on assistant tokens only, tool results masked; final model in OUTPUT_DIR/final.

    Data: sft.train_files = ShareGPT/ARPO-SFT .json/.jsonl files, or `synthetic` for traces of the task
    generator whose tool calls are executed by the real tools. Preset: `-c sft_default`.
    """
    cfg = resolve_config(config, overrides)
    with user_errors():
        from appo.sft import run_sft
        from appo.sft.traces import SFTDataError

        try:
            result = run_sft(cfg, output_dir=output_dir, resume=resume)
        except SFTDataError as exc:
            raise ValueError(str(exc)) from None
    typer.echo(str(result.final_dir))
