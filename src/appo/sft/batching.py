"""Length-bucketed micro-batches and collation for SFT.

Each epoch: shuffle the examples with ``seed + epoch``, cut the order into windows of
``micro_batch_size × bucket_factor`` examples, sort every window by length and slice it into
micro-batches (so a micro-batch holds similar lengths and little padding), then shuffle the
micro-batches. The plan is a pure function of ``(lengths, seed, epoch)``, so a resumed run rebuilds it
and skips to its saved position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from appo.sft.encoding import IGNORE_INDEX, EncodedExample

__all__ = ["MicroBatch", "collate", "epoch_plan"]


def epoch_plan(
    lengths: Sequence[int], micro_batch_size: int, seed: int, epoch: int, bucket_factor: int = 16
) -> list[list[int]]:
    """Micro-batches (lists of example indices) of one epoch; the last one may be smaller."""
    rng = random.Random(f"appo-sft-{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = max(1, micro_batch_size * bucket_factor)
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + micro_batch_size] for j in range(0, len(chunk), micro_batch_size))
    rng.shuffle(batches)
    return batches


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Tokens whose label is trained (the prediction targets), after the causal shift."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: str | torch.device) -> MicroBatch:
        return MicroBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def collate(examples: Sequence[EncodedExample], pad_id: int) -> MicroBatch:
    """Right-pad to the longest example (labels padded with ``-100``)."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e)
        ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
    return MicroBatch(ids, mask, labels)
