"""Loading causal LMs and tokenizers from local HF directories (never from a hub at run time)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appo.models.default import ensure_default_model, is_default_model

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded; the message says which file or setting."""


def resolve_model_path(name_or_path: str, quiet: bool = False) -> Path:
    """Map ``smollm2-135m-instruct`` (or ``default``) to the cached default model, a directory to itself,
    and a hub-style id (``org/name``) to its snapshot in the local HF cache. Never downloads from a hub."""
    if is_default_model(name_or_path):
        return ensure_default_model(quiet=quiet)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _check_model_dir(path)
        return path
    if path.exists():
        raise ModelLoadError(f"{name_or_path} is a file; expected an HF model directory")
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(name_or_path, local_files_only=True))
        except Exception as exc:
            raise ModelLoadError(
                f"model '{name_or_path}' is neither a local directory nor in the local Hugging Face cache. "
                "appo never downloads weights at run time: download it first "
                f"(`hf download {name_or_path}`) or pass a directory."
            ) from exc
        _check_model_dir(snapshot)
        return snapshot
    raise ModelLoadError(f"model directory not found: {name_or_path}")


def _check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not an HF model directory: config.json is missing")
    if not any(path.glob(pattern) for pattern in WEIGHT_PATTERNS):
        raise ModelLoadError(f"{path} holds no weights (*.safetensors or pytorch_model*.bin)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ModelLoadError(f"{path}: weight shards listed in {index.name} are missing: {missing}")


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' requested but CUDA is not available")
    return device


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelLoadError(
            f"unknown dtype '{dtype}' (expected auto, float32, bfloat16 or float16)"
        ) from None


def load_tokenizer(name_or_path: str | Path, quiet: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(str(name_or_path), quiet=quiet)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer from {path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | Path,
    dtype: str = "auto",
    device: str = "auto",
    quiet: bool = False,
    gradient_checkpointing: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local HF directory or the embedded default."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(str(name_or_path), quiet=quiet)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = load_tokenizer(path, quiet=quiet)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"could not load the model from {path}: {type(exc).__name__}: {exc}") from exc
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(device), tokenizer


# --------------------------------------------------------------------------------------------- info


@dataclass
class ModelInfo:
    path: str
    architecture: str
    parameters: int
    dtype: str
    vocab_size: int
    context_length: int | None
    chat_template: bool
    special_tokens: dict[str, str] = field(default_factory=dict)
    layers: int | None = None
    hidden_size: int | None = None


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def _count_parameters(path: Path) -> tuple[int, str]:
    """Parameter count and dominant dtype from safetensors headers (no weights are loaded)."""
    total, dtypes = 0, {}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: parameter count needs *.safetensors files")
    for file in files:
        for name, meta in _safetensors_header(file).items():
            if name == "__metadata__":
                continue
            numel = 1
            for dim in meta["shape"]:
                numel *= dim
            total += numel
            dtypes[meta["dtype"]] = dtypes.get(meta["dtype"], 0) + numel
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    dominant = max(dtypes, key=dtypes.get) if dtypes else "unknown"
    return total, names.get(dominant, dominant.lower())


def model_info(name_or_path: str, quiet: bool = False) -> ModelInfo:
    path = resolve_model_path(name_or_path, quiet=quiet)
    config = json.loads((path / "config.json").read_text())
    tokenizer = load_tokenizer(path, quiet=quiet)
    parameters, dtype = _count_parameters(path)
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return ModelInfo(
        path=str(path),
        architecture=(config.get("architectures") or [config.get("model_type", "?")])[0],
        parameters=parameters,
        dtype=dtype,
        vocab_size=int(config.get("vocab_size", len(tokenizer))),
        context_length=config.get("max_position_embeddings"),
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        special_tokens=specials,
        layers=config.get("num_hidden_layers"),
        hidden_size=config.get("hidden_size"),
    )
