"""Model loading (local HF directories, the embedded default) and tiny test models."""

from appo.models.default import (
    DEFAULT_MODEL_NAME,
    EXPECTED_PARAMETERS,
    DefaultModelError,
    appo_home,
    cache_problem,
    default_model_dir,
    ensure_default_model,
    ensure_default_tokenizer,
    is_default_model,
)
from appo.models.loading import (
    ModelInfo,
    ModelLoadError,
    load_model,
    load_tokenizer,
    model_info,
    pick_device,
    pick_dtype,
    resolve_model_path,
)
from appo.models.tiny import save_tiny_model, tiny_config, tiny_grammar_model, tiny_model, tiny_tokenizer

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EXPECTED_PARAMETERS",
    "DefaultModelError",
    "ModelInfo",
    "ModelLoadError",
    "appo_home",
    "cache_problem",
    "default_model_dir",
    "ensure_default_model",
    "ensure_default_tokenizer",
    "is_default_model",
    "load_model",
    "load_tokenizer",
    "model_info",
    "pick_device",
    "pick_dtype",
    "resolve_model_path",
    "save_tiny_model",
    "tiny_config",
    "tiny_grammar_model",
    "tiny_model",
    "tiny_tokenizer",
]
