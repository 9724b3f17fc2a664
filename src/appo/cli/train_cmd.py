"""`appo train` and `appo report`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from appo.cli.common import config_option, fail, overrides_argument, resolve_config, user_errors


def train(
    overrides: list[str] = overrides_argument(),
    config: str = config_option(),
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this directory from its last checkpoint."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many steps (the run stays resumable)."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.md when the run ends."),
) -> None:
    """Train with APPO (default), GRPO or ARPO. With no arguments: the CPU demo on the embedded model."""
    from appo.train.rl import train as run_training

    if resume is not None:
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise fail(f"--resume {resume}: no config.yaml there (not a run directory)", code=2)
        cfg = resolve_config(
            str(saved), [*(overrides or []), f"trainer.default_local_dir={resume.resolve()}"]
        )
    else:
        cfg = resolve_config(config, overrides)
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{cfg.algorithm.adv_estimator} training", total=None, status="starting…")

        def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
            status = (
                f"reward {metrics.get('critic/score/init_mean', float('nan')):+.3f}"
                + (
                    f" | branch {metrics['critic/score/branch_mean']:+.3f}"
                    if "critic/score/branch_mean" in metrics
                    else ""
                )
                + f" | tools/traj {metrics.get('rollout/tool_calls_per_trajectory', 0):.2f}"
                + f" | {metrics.get('timing_s/step', 0):.1f}s/step"
            )
            progress.update(task, total=total, completed=step, status=status)

        def log(message: str) -> None:
            progress.console.print(message)

        with user_errors():
            run_dir = run_training(
                cfg,
                resume=resume is not None,
                on_step=on_step,
                log=log,
                max_steps=max_steps,
                phase=lambda text: progress.update(task, status=text),
            )
    if report:
        from appo.train.report import write_report

        with user_errors():
            path = write_report(run_dir)
        console.print(f"report: {path}")
    typer.echo(str(run_dir))


def report(run_dir: Path = typer.Argument(..., help="A training run directory.")) -> None:
    """Write report.md (reward curves, validation, tool calls, where branches land) into RUN_DIR."""
    from appo.train.report import write_report

    with user_errors():
        path = write_report(run_dir)
    typer.echo(str(path))
