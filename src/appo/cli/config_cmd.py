"""`appo config`: inspect presets and the resolved configuration."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from appo.cli.common import config_option, overrides_argument, resolve_config

app = typer.Typer(help="Show and check configurations (presets + dotted overrides).", no_args_is_help=True)


@app.command("show")
def show(
    overrides: list[str] = overrides_argument(),
    config: str = config_option(),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the resolved YAML to this file."),
) -> None:
    """Print the fully resolved YAML (the same file every run saves as config.yaml)."""
    from appo.config import save_config, to_yaml

    cfg = resolve_config(config, overrides)
    text = to_yaml(cfg)
    if output is not None:
        save_config(cfg, output)
    console = Console()
    if console.is_terminal:
        console.print(Syntax(text, "yaml", background_color="default"))
    else:
        typer.echo(text, nl=False)


@app.command("list")
def list_() -> None:
    """List the built-in presets."""
    import yaml

    from appo.config import PRESET_DIR, list_presets

    table = Table("preset", "extends", "description")
    for name in list_presets():
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
        parent = (yaml.safe_load(text) or {}).get("extends", "")
        table.add_row(name, str(parent or ""), first)
    Console().print(table)


@app.command("keys")
def keys(prefix: str = typer.Argument("", help="Only keys starting with this prefix.")) -> None:
    """List every valid configuration key."""
    from appo.config import all_keys

    for key in all_keys():
        if key.startswith(prefix):
            typer.echo(key)
