"""Cold-start SFT on tool-use traces (``appo sft``). See docs/sft.md.

* :func:`run_sft` / :class:`SFTRecipe` — the training recipe (checkpoints, resume, metrics, final HF dir);
* :func:`build_synthetic_traces`, :func:`read_sharegpt` — data;
* :func:`encode_conversation` — ``(input_ids, labels)`` with prompt and tool-result tokens masked;
* :func:`ensure_sft_warm_start` — the cached warm start the default RL run starts from.
"""

from appo.sft.encoding import IGNORE_INDEX, EncodedExample, encode_conversation, split_tool_results
from appo.sft.traces import (
    Conversation,
    SFTDataError,
    TraceReport,
    build_synthetic_traces,
    read_conversations,
    read_sharegpt,
    write_conversations,
)
from appo.sft.trainer import SFTRecipe, SFTResult, run_sft, sft_loss, validate_sft_config
from appo.sft.warmstart import ensure_sft_warm_start, warm_start_config, warm_start_dir

__all__ = [
    "IGNORE_INDEX",
    "Conversation",
    "EncodedExample",
    "SFTDataError",
    "SFTRecipe",
    "SFTResult",
    "TraceReport",
    "build_synthetic_traces",
    "encode_conversation",
    "ensure_sft_warm_start",
    "read_conversations",
    "read_sharegpt",
    "run_sft",
    "sft_loss",
    "split_tool_results",
    "validate_sft_config",
    "warm_start_config",
    "warm_start_dir",
    "write_conversations",
]
