"""Datasets: readers for the ARPO/APPO RL parquet and evaluation jsonl files, prompt templates and
seeded synthetic tool-use tasks. See docs/data-and-rewards.md."""

from appo.data.prompts import (
    PromptTemplate,
    apply_chat_template,
    available_prompts,
    build_messages,
    get_prompt,
    register_prompt,
    render_prompt,
)
from appo.data.readers import (
    BENCHMARKS,
    EVAL_BENCHMARKS,
    RL_FILES,
    DataError,
    Example,
    ReadReport,
    eval_path,
    gsm8k_final_answer,
    iter_eval_jsonl,
    iter_examples,
    iter_rl_parquet,
    read_examples,
    repair_backspace,
    rl_path,
    shared_data_dir,
)
from appo.data.synthetic import SyntheticSet, generate_synthetic

__all__ = [
    "BENCHMARKS",
    "EVAL_BENCHMARKS",
    "RL_FILES",
    "DataError",
    "Example",
    "PromptTemplate",
    "ReadReport",
    "SyntheticSet",
    "apply_chat_template",
    "available_prompts",
    "build_messages",
    "eval_path",
    "generate_synthetic",
    "get_prompt",
    "gsm8k_final_answer",
    "iter_eval_jsonl",
    "iter_examples",
    "iter_rl_parquet",
    "read_examples",
    "register_prompt",
    "render_prompt",
    "repair_backspace",
    "rl_path",
    "shared_data_dir",
]
