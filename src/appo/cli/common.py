"""Options and error handling shared by every command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

CONFIG_HELP = "Preset name (see `appo config list`) or path to a YAML file; default: `default`."
OVERRIDES_HELP = "Dotted overrides, VERL style: actor_rollout_ref.rollout.n=16 data.train_batch_size=8"


def config_option() -> Any:
    return typer.Option(None, "--config", "-c", help=CONFIG_HELP)


def overrides_argument() -> Any:
    return typer.Argument(None, help=OVERRIDES_HELP, show_default=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected errors into one readable line: configuration problems exit 2, others 1."""
    import click

    from appo.config import ConfigError

    try:
        yield
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except ConfigError as exc:
        raise fail(str(exc), code=2) from None
    except (FileNotFoundError, PermissionError, ValueError, RuntimeError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}" if not _is_own(exc) else str(exc)) from None


def _is_own(exc: Exception) -> bool:
    return type(exc).__module__.startswith("appo.")


def resolve_config(config: str | None, overrides: list[str] | None) -> Any:
    """Load preset + overrides; a configuration problem exits with code 2 and a one-line message."""
    from appo.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        raise fail(str(exc), code=2) from None


def run_guarded(fn: Callable[[], T]) -> T:
    with user_errors():
        return fn()
