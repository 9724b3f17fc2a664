"""Where step metrics go besides ``metrics.jsonl``: TensorBoard and Weights & Biases, when asked for
in ``trainer.logger`` (their packages are optional; asking without them installed is a clear error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appo.config import ConfigError


class MetricSinks:
    def __init__(
        self, loggers: list[str], run_dir: Path, project: str, experiment: str, config: dict
    ) -> None:
        self._writers: list[Any] = []
        self._wandb: Any = None
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError(
                    "trainer.logger includes 'tensorboard' but the tensorboard package is not installed "
                    "(pip install tensorboard)"
                ) from exc
            self._writers.append(SummaryWriter(log_dir=str(run_dir / "tensorboard")))
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError as exc:
                raise ConfigError(
                    "trainer.logger includes 'wandb' but the wandb package is not installed (pip install wandb)"
                ) from exc
            self._wandb = wandb.init(
                project=project, name=experiment, config=config, dir=str(run_dir), resume="allow"
            )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for writer in self._writers:
            for key, value in numbers.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._wandb is not None:
            self._wandb.finish()
