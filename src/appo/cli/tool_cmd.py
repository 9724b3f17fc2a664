"""`appo tool …`: run one call of a configured tool, show tools and their protections."""

from __future__ import annotations

import json
from typing import Any

import typer

from appo.cli.common import config_option, fail, overrides_argument, resolve_config

app = typer.Typer(
    help="Run one call of a configured tool (python sandbox, search, …) with the configured limits.",
    no_args_is_help=True,
)


def _registry(config: str | None, overrides: list[str] | None) -> Any:
    from appo.tools import ToolError, build_tools

    cfg = resolve_config(config, overrides)
    try:
        return build_tools(cfg.actor_rollout_ref.rollout.tools)
    except ToolError as exc:
        raise fail(str(exc)) from None


@app.command("run")
def run(
    name: str = typer.Argument(..., help="Tool tag or instance name (python, search, …)."),
    argument: str = typer.Argument(None, help="The text the model would put between the tags."),
    overrides: list[str] = overrides_argument(),
    config: str = config_option(),
    info: bool = typer.Option(False, "--info", help="Print the tool's configuration and active protections."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run one call and print the formatted result and whether it was ok.

    Exit code 0 when the tool ran (even if it reported an error), 1 when it could not run at all,
    2 for configuration errors.
    """
    from appo.tools import Session, ToolError

    overrides = list(overrides or [])
    if info and argument is not None and "=" in argument:
        overrides.insert(0, argument)  # `appo tool run python --info key=value`
        argument = None
    registry = _registry(config, overrides)
    try:
        tool = registry.lookup(name)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    if info:
        try:
            typer.echo(json.dumps(tool.info(), indent=2, default=str))
        except ToolError as exc:
            raise fail(str(exc)) from None
        return
    if argument is None:
        raise fail("missing ARGUMENT (the tool input), e.g. appo tool run python 'print(1+1)'", code=2)
    runtime = registry.runtime()
    try:
        with Session(id="cli") as session:
            result = runtime.run(tool.tag, argument, session)
    except ToolError as exc:
        raise fail(str(exc)) from None
    finally:
        runtime.close()
        registry.close()
    if result.metadata.get("error_kind") in ("unknown_tool",):
        raise fail(result.text)
    if as_json:
        payload = {"tool": tool.tag, "ok": result.ok, "latency": result.latency, "text": result.text}
        payload["metadata"] = result.metadata
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    typer.echo(runtime.format(result))
    status = "ok" if result.ok else f"error ({result.metadata.get('error_kind') or 'failed'})"
    typer.echo(f"[{tool.tag}] {status} in {result.latency:.3f}s", err=True)


@app.command("list")
def list_tools(overrides: list[str] = overrides_argument(), config: str = config_option()) -> None:
    """List the configured tools, their stop strings and loop settings."""
    registry = _registry(config, overrides)
    c = registry.config
    typer.echo(
        f"call_limit={c.call_limit} max_workers={c.max_workers} timeout={c.timeout:g}s "
        f"retry_count={c.retry_count} stop={registry.stop_strings}"
    )
    for name, tag in registry.names.items():
        tool = registry[tag]
        typer.echo(f"{name}: <{tag}> {type(tool).__module__}.{type(tool).__qualname__}")
    registry.close()
