"""The cold-start SFT recipe (``appo sft``). Read it top to bottom:

1. :func:`validate_sft_config` — range checks of the ``sft.*`` keys, before any work;
2. :meth:`SFTRecipe.setup` — device/dtype, model + tokenizer, data (ShareGPT files or synthetic traces
   built with the real tools), tokenisation with masks, train/val split, AdamW, lr schedule, and — with
   ``resume`` — model weights, optimizer, scheduler, RNG and data position from the last checkpoint;
3. :meth:`SFTRecipe.train` — optimizer steps over length-bucketed micro-batches with gradient
   accumulation (token-mean loss over the whole step), grad clipping, bf16 autocast on CUDA, periodic
   eval loss, checkpoints, metrics jsonl and a progress bar;
4. the final model is written to ``<output_dir>/final`` (an HF directory).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from appo.config import DTYPES, ConfigError
from appo.sft.batching import MicroBatch, collate, epoch_plan
from appo.sft.checkpoint import (
    STATE_FILE,
    atomic_save_pretrained,
    capture_rng,
    latest_checkpoint,
    restore_rng,
    save_checkpoint,
)
from appo.sft.encoding import IGNORE_INDEX, EncodedExample, encode_conversation
from appo.sft.traces import Conversation, TraceReport, read_conversations, read_sharegpt, write_conversations

__all__ = ["SFTRecipe", "SFTResult", "run_sft", "sft_loss", "validate_sft_config"]

LR_SCHEDULERS = ("cosine", "constant")
OVERLONG = ("truncate", "drop")
Hook = Callable[[int, dict[str, Any]], None]


# ----------------------------------------------------------------------------------------- config


def _bad(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"invalid value for 'sft.{key}': expected {expected}, got {value!r}")


def validate_sft_config(cfg: DictConfig) -> None:
    """Checks of ``sft.*`` that types alone cannot express (raises :class:`ConfigError`)."""
    s = cfg.sft
    for key in ("micro_batch_size", "gradient_accumulation_steps", "epochs", "keep_last"):
        if int(s[key]) < 1:
            raise _bad(key, "an integer >= 1", s[key])
    for key in ("eval_every", "save_every"):
        if int(s[key]) < 0:
            raise _bad(key, "an integer >= 0 (0 = only at the end)", s[key])
    if int(s.max_length) < 16:
        raise _bad("max_length", "an integer >= 16", s.max_length)
    if not (s.max_steps == -1 or s.max_steps >= 1):
        raise _bad("max_steps", "-1 (use epochs) or an integer >= 1", s.max_steps)
    if not float(s.lr) > 0:
        raise _bad("lr", "a number > 0", s.lr)
    if s.lr_scheduler not in LR_SCHEDULERS:
        raise _bad("lr_scheduler", f"one of {', '.join(LR_SCHEDULERS)}", s.lr_scheduler)
    if s.overlong not in OVERLONG:
        raise _bad("overlong", f"one of {', '.join(OVERLONG)}", s.overlong)
    if s.dtype not in DTYPES:
        raise _bad("dtype", f"one of {', '.join(DTYPES)}", s.dtype)
    if not 0.0 <= float(s.warmup_ratio) < 1.0:
        raise _bad("warmup_ratio", "a number in [0, 1)", s.warmup_ratio)
    if not 0.0 <= float(s.min_lr_ratio) <= 1.0:
        raise _bad("min_lr_ratio", "a number in [0, 1]", s.min_lr_ratio)
    if not 0.0 <= float(s.val_fraction) < 1.0:
        raise _bad("val_fraction", "a number in [0, 1)", s.val_fraction)
    if float(s.weight_decay) < 0:
        raise _bad("weight_decay", "a number >= 0", s.weight_decay)
    if len(s.betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in s.betas):
        raise _bad("betas", "two numbers in [0, 1)", list(s.betas))
    if not s.train_files:
        raise _bad(
            "train_files", "a non-empty list of .json/.jsonl files or 'synthetic'", list(s.train_files)
        )
    if s.packing:
        raise _bad(
            "packing", "false (packing is not implemented; length-bucketed batching is used)", s.packing
        )
    syn = s.synthetic
    if "synthetic" in list(s.train_files) + list(s.val_files):
        if int(syn.n_python) < 0 or int(syn.n_search) < 0 or int(syn.n_python) + int(syn.n_search) < 1:
            raise _bad("synthetic.n_python", "non-negative task counts with at least one task", syn.n_python)
        if int(syn.search_top_k) < 1:
            raise _bad("synthetic.search_top_k", "an integer >= 1", syn.search_top_k)


def sft_section_hash(cfg: DictConfig, extra: dict[str, Any] | None = None) -> str:
    """A short hash of what determines an SFT result (the sft section without output_dir, the model,
    the tools and the system prompt)."""
    sft = OmegaConf.to_container(cfg.sft, resolve=True)
    assert isinstance(sft, dict)
    sft.pop("output_dir", None)
    payload = {
        "sft": sft,
        "model": str(cfg.actor_rollout_ref.model.path),
        "tools": OmegaConf.to_container(cfg.actor_rollout_ref.rollout.tools, resolve=True),
        "system_prompt": cfg.data.system_prompt,
        **(extra or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- loss


MIN_SHARED_PREFIX = 16


def shared_prefix_length(batch: MicroBatch) -> int:
    """Length of the token prefix all rows share (and that is real text in every row)."""
    ids = batch.input_ids
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0).long().cumprod(dim=0)
    return min(int(same.sum()), int(batch.attention_mask.sum(dim=1).min()))


def _cache_kwarg(model: Any) -> str | None:
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def sft_loss(
    model: Any, batch: MicroBatch, *, use_logits_to_keep: bool = True, share_prefix: bool = False
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over trained tokens (labels != -100, shifted by one) and their count.

    Logits are computed only from the first position that predicts a trained token onwards
    (``logits_to_keep``), so the LM head skips the (masked) prompt. With ``share_prefix`` the prefix
    that every row shares (e.g. the system prompt) runs once and its KV cache is repeated for the
    rows — the same logits and gradients (gradients flow through the shared cache), less compute."""
    labels = batch.labels[:, 1:]
    trained = labels != IGNORE_INDEX
    n = int(trained.sum())
    width = batch.input_ids.shape[1]
    cols = trained.any(dim=0).nonzero()
    first = int(cols[0]) if len(cols) else width - 1
    prefix = min(shared_prefix_length(batch), first) if share_prefix else 0
    cache_name = _cache_kwarg(model) if prefix >= MIN_SHARED_PREFIX else None
    kwargs: dict[str, Any] = {}
    if use_logits_to_keep:
        kwargs["logits_to_keep"] = width - first
    cache = None
    if cache_name is not None:
        head = model(input_ids=batch.input_ids[:1, :prefix], use_cache=True, logits_to_keep=1)
        cache = getattr(head, cache_name, None)
        if cache is None:
            cache = getattr(head, "past_key_values", None)
        if not hasattr(cache, "batch_repeat_interleave"):
            cache = None  # a model whose cache cannot be repeated: plain forward
    if cache is not None:
        cache.batch_repeat_interleave(batch.input_ids.shape[0])
        kwargs[str(cache_name)] = cache
        out = model(
            input_ids=batch.input_ids[:, prefix:],
            attention_mask=batch.attention_mask,
            use_cache=True,
            **kwargs,
        )
        logits = out.logits if use_logits_to_keep else out.logits[:, first - prefix :]
    else:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **kwargs)
        logits = out.logits if use_logits_to_keep else out.logits[:, first:]
    logits = logits[:, :-1].float()
    target = labels[:, first:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, n


def lr_factor(step: int, total: int, warmup: int, scheduler: str, min_ratio: float) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based): linear warmup, then constant or
    cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------- recipe


@dataclass
class SFTResult:
    output_dir: Path
    final_dir: Path
    steps: int
    last: dict[str, Any] = field(default_factory=dict)
    eval_loss: float | None = None
    resumed_from: int | None = None


def _log(console: Any, message: str) -> None:
    if console is not None:
        console.print(message, highlight=False)


class SFTRecipe:
    """Cold-start SFT. ``SFTRecipe(cfg).setup(); recipe.train()``; or :func:`run_sft`."""

    def __init__(
        self,
        cfg: DictConfig,
        *,
        output_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        console: Any = None,
    ) -> None:
        validate_sft_config(cfg)
        self.cfg = cfg
        self.s = cfg.sft
        self.output_dir = Path(output_dir if output_dir is not None else self.s.output_dir).expanduser()
        self.resume = resume
        self.progress = progress
        if console is None and progress:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.ckpt_root = self.output_dir / "checkpoints"
        self.metrics_path = self.output_dir / "metrics.jsonl"

    # ---------------------------------------------------------------- setup
    def setup(self) -> SFTRecipe:
        from transformers.utils import logging as hf_logging

        from appo.config import save_config
        from appo.models import load_model, pick_device

        hf_logging.disable_progress_bar()
        s = self.s
        resume_from = latest_checkpoint(self.ckpt_root)
        if resume_from is not None and not self.resume:
            raise ConfigError(
                f"{self.output_dir} already holds checkpoints ({resume_from.name}); pass --resume to "
                "continue that run or choose another sft.output_dir"
            )
        if self.resume and resume_from is None:
            _log(self.console, f"[yellow]No checkpoint under {self.ckpt_root}; starting from scratch.[/]")
        self.resume_from = resume_from
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.output_dir / "config.yaml")

        # device and precision: float32 master weights + bf16 autocast on CUDA by default
        self.device = pick_device(str(self.cfg.trainer.device))
        self.autocast = (
            s.dtype == "auto" and self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        )
        param_dtype = "float32" if s.dtype == "auto" else str(s.dtype)
        torch.manual_seed(int(s.seed))
        random.seed(int(s.seed))

        source = str(resume_from) if resume_from is not None else str(self.cfg.actor_rollout_ref.model.path)
        self.model, self.tokenizer = load_model(
            source,
            dtype=param_dtype,
            device=self.device,
            quiet=not self.progress,
            gradient_checkpointing=bool(s.gradient_checkpointing),
        )
        self.model.config.use_cache = False
        self.model.train()
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        # one forward of the prefix all rows of a micro-batch share (the system prompt); needs the KV
        # cache, which gradient checkpointing turns off
        self._share_prefix = (
            self._logits_to_keep and not s.gradient_checkpointing and _cache_kwarg(self.model) is not None
        )

        self._setup_data()

        # optimizer: no weight decay on biases and norms
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(s.weight_decay)},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(s.lr),
            betas=(float(s.betas[0]), float(s.betas[1])),
        )
        accum = int(s.gradient_accumulation_steps)
        self.steps_per_epoch = max(1, math.ceil(len(self._plan(0)) / accum))
        self.total_steps = int(s.max_steps) if s.max_steps > 0 else int(s.epochs) * self.steps_per_epoch
        self.warmup_steps = math.ceil(float(s.warmup_ratio) * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda i: lr_factor(
                i, self.total_steps, self.warmup_steps, str(s.lr_scheduler), float(s.min_lr_ratio)
            ),
        )

        self.step = 0
        self.epoch = 0
        self.position = 0  # next micro-batch index inside the epoch plan
        self.tokens_seen = 0
        self.elapsed = 0.0
        if resume_from is not None:
            self._load_state(resume_from)
        return self

    def _setup_data(self) -> None:
        s = self.s
        from appo.data.prompts import get_prompt

        data_dir = self.output_dir / "data"
        train_cache, val_cache = data_dir / "train.jsonl", data_dir / "val.jsonl"
        self.reports: list[TraceReport] = []
        if self.resume_from is not None and train_cache.is_file():
            # the exact conversations the interrupted run trained on
            train = read_sharegpt(train_cache, system_default=None)
            val = read_sharegpt(val_cache, system_default=None) if val_cache.is_file() else []
        else:
            system_default = get_prompt(str(s.prompt)).system
            common = {
                "system_default": system_default,
                "system_override": self.cfg.data.system_prompt,
                "skip_bad_rows": bool(s.skip_bad_rows),
                "synthetic": OmegaConf.to_container(s.synthetic, resolve=True),
                "tools_cfg": self.cfg.actor_rollout_ref.rollout.tools,
                "prompt": str(s.prompt),
                "workdir": data_dir,
            }
            data_dir.mkdir(parents=True, exist_ok=True)
            train, reports = read_conversations(list(s.train_files), **common)
            self.reports.extend(reports)
            if s.val_files:
                val_common = dict(common)
                syn = dict(common["synthetic"])  # type: ignore[arg-type]
                syn["seed"] = int(syn.get("seed", 0)) + 1  # held-out synthetic tasks
                val_common["synthetic"] = syn
                val, reports = read_conversations(list(s.val_files), **val_common)
                self.reports.extend(reports)
            else:
                train, val = self._split(train)
            write_conversations(train, train_cache)
            write_conversations(val, val_cache)
            for rep in self.reports:
                if rep.skipped:
                    _log(
                        self.console,
                        f"[yellow]{rep.source}: skipped {rep.skipped} of {rep.rows + rep.skipped} rows[/] "
                        f"(first: {rep.reasons[0] if rep.reasons else '?'})",
                    )
        self.train_set = self._encode(train, "train")
        self.val_set = self._encode(val, "val") if val else []
        if not self.train_set:
            raise ValueError("no SFT training examples left after tokenisation (check sft.max_length)")
        self.train_lengths = [len(e) for e in self.train_set]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        _log(
            self.console,
            f"SFT data: {len(self.train_set)} train / {len(self.val_set)} val sequences, "
            f"{sum(self.train_lengths):,} train tokens ({sum(e.n_trained for e in self.train_set):,} trained)",
        )

    def _split(self, convs: list[Conversation]) -> tuple[list[Conversation], list[Conversation]]:
        frac = float(self.s.val_fraction)
        n_val = round(len(convs) * frac) if frac > 0 else 0
        if frac > 0 and len(convs) >= 2:
            n_val = max(1, n_val)
        order = list(range(len(convs)))
        random.Random(f"appo-sft-split-{self.s.seed}").shuffle(order)
        val_idx = set(order[:n_val])
        return [c for i, c in enumerate(convs) if i not in val_idx], [
            c for i, c in enumerate(convs) if i in val_idx
        ]

    def _encode(self, convs: Sequence[Conversation], split: str) -> list[EncodedExample]:
        out: list[EncodedExample] = []
        dropped = truncated = 0
        for conv in convs:
            enc = encode_conversation(
                conv,
                self.tokenizer,
                mask_tool_results=bool(self.s.mask_tool_results),
                max_length=int(self.s.max_length),
                overlong=str(self.s.overlong),
            )
            if enc is None:
                dropped += 1
                continue
            truncated += enc.truncated
            out.append(enc)
        if dropped or truncated:
            _log(
                self.console,
                f"[yellow]{split}: {truncated} sequences truncated and {dropped} dropped at "
                f"sft.max_length={self.s.max_length} (sft.overlong={self.s.overlong})[/]",
            )
        return out

    def _plan(self, epoch: int) -> list[list[int]]:
        return epoch_plan(self.train_lengths, int(self.s.micro_batch_size), int(self.s.seed), epoch)

    def _fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.train_lengths).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "tokens_seen": self.tokens_seen,
            "elapsed": self.elapsed,
            "total_steps": self.total_steps,
            "data_fingerprint": self._fingerprint(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
        }

    def _load_state(self, ckpt: Path) -> None:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        if state["data_fingerprint"] != self._fingerprint():
            raise ValueError(
                f"{ckpt}: the training data differs from the checkpointed run's (fingerprint mismatch); "
                "resume with the same data and sft.max_length"
            )
        if state["total_steps"] != self.total_steps:
            _log(self.console, f"[yellow]total steps changed: {state['total_steps']} → {self.total_steps}[/]")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.tokens_seen, self.elapsed = state["tokens_seen"], state["elapsed"]
        # keep only the metrics the checkpointed run had logged up to its step
        if self.metrics_path.is_file():
            kept = [
                line
                for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step
            ]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        _log(self.console, f"Resuming from {ckpt} (step {self.step}, epoch {self.epoch})")

    # ---------------------------------------------------------------- loop
    def _next_micro_batches(self) -> list[MicroBatch]:
        """The micro-batches of the next optimizer step (advancing epoch/position)."""
        accum = int(self.s.gradient_accumulation_steps)
        plan = self._plan(self.epoch)
        if self.position >= len(plan):
            self.epoch, self.position = self.epoch + 1, 0
            plan = self._plan(self.epoch)
        chunk = plan[self.position : self.position + accum]
        self.position += len(chunk)
        return [collate([self.train_set[i] for i in idx], self.pad_id).to(self.device) for idx in chunk]

    def _autocast(self) -> Any:
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> dict[str, Any]:
        batches = self._next_micro_batches()
        n_total = sum(b.n_tokens for b in batches)
        loss_sum = 0.0
        tokens = 0
        self.optimizer.zero_grad(set_to_none=True)
        for b in batches:
            with self._autocast():
                loss, _ = sft_loss(
                    self.model, b, use_logits_to_keep=self._logits_to_keep, share_prefix=self._share_prefix
                )
            (loss / max(1, n_total)).backward()
            loss_sum += float(loss.detach())
            tokens += int(b.attention_mask.sum())
        clip = float(self.s.grad_clip)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {
            "loss": loss_sum / max(1, n_total),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": tokens,
            "trained_tokens": n_total,
        }

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.val_set:
            return None
        self.model.eval()
        order = sorted(range(len(self.val_set)), key=lambda i: len(self.val_set[i]))
        mbs = int(self.s.micro_batch_size)
        total, n = 0.0, 0
        for j in range(0, len(order), mbs):
            batch = collate([self.val_set[i] for i in order[j : j + mbs]], self.pad_id).to(self.device)
            with self._autocast():
                loss, k = sft_loss(
                    self.model,
                    batch,
                    use_logits_to_keep=self._logits_to_keep,
                    share_prefix=self._share_prefix,
                )
            total, n = total + float(loss), n + k
        self.model.train()
        return total / max(1, n)

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def save(self) -> Path:
        summary = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "total_steps": self.total_steps,
            "tokens_seen": self.tokens_seen,
        }
        return save_checkpoint(
            self.ckpt_root,
            self.step,
            self.model,
            self.tokenizer,
            self._state(),
            summary,
            int(self.s.keep_last),
        )

    def train(self, hooks: Sequence[Hook] = ()) -> SFTResult:
        """Run until ``total_steps``; ``hooks(step, record)`` run after each step (tests inject faults)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        s = self.s
        resumed_from = self.step if self.resume_from is not None else None
        eval_every, save_every = int(s.eval_every), int(s.save_every)
        last: dict[str, Any] = {}
        eval_loss: float | None = None
        progress = Progress(
            TextColumn("[bold]sft[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.progress,
        )
        with progress:
            task = progress.add_task("sft", total=self.total_steps, completed=self.step, loss="-", tps="-")
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                rec = self.train_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self.tokens_seen += rec["tokens"]
                record: dict[str, Any] = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": rec["loss"],
                    "lr": rec["lr"],
                    "grad_norm": rec["grad_norm"],
                    "tokens": rec["tokens"],
                    "trained_tokens": rec["trained_tokens"],
                    "tokens_per_s": rec["tokens"] / dt if dt > 0 else 0.0,
                    "elapsed_s": self.elapsed,
                }
                final = self.step == self.total_steps
                if (eval_every and self.step % eval_every == 0) or final:
                    eval_loss = self.evaluate()
                    if eval_loss is not None:
                        record["eval_loss"] = eval_loss
                self._write_metrics(record)
                if (save_every and self.step % save_every == 0) and not final:
                    self.save()
                last = record
                progress.update(
                    task, completed=self.step, loss=f"{rec['loss']:.4f}", tps=f"{record['tokens_per_s']:.0f}"
                )
                for hook in hooks:
                    hook(self.step, record)
        final_dir = atomic_save_pretrained(
            self.model,
            self.tokenizer,
            self.output_dir / "final",
            extra={
                "appo_sft.json": {
                    "steps": self.step,
                    "eval_loss": eval_loss,
                    "base_model": str(self.cfg.actor_rollout_ref.model.path),
                    "mask_tool_results": bool(s.mask_tool_results),
                }
            },
        )
        _log(self.console, f"SFT done: {self.step} steps; final model in {final_dir}")
        return SFTResult(self.output_dir, final_dir, self.step, last, eval_loss, resumed_from)


def run_sft(
    cfg: DictConfig,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    hooks: Sequence[Hook] = (),
    console: Any = None,
) -> SFTResult:
    """Validate, set up and train; returns where the final model is."""
    recipe = SFTRecipe(cfg, output_dir=output_dir, resume=resume, progress=progress, console=console)
    return recipe.setup().train(hooks=hooks)
