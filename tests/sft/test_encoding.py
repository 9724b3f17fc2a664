"""Tokenisation: the sequence equals what an RL rollout sees; labels only on assistant-written tokens."""

from __future__ import annotations

import pytest

from appo.data import apply_chat_template
from appo.sft import IGNORE_INDEX, Conversation, SFTDataError, encode_conversation, split_tool_results

RESPONSE = (
    "<think> compute </think>\n<python>\nprint(6 * 7)\n</python> <result>\n42\n</result>\n"
    "<think> it is 42 </think>\n<answer> \\boxed{42} </answer>"
)


def _conv(response: str = RESPONSE) -> Conversation:
    return Conversation(
        [
            {"role": "system", "content": "You are a tool user."},
            {"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "content": response},
        ],
        id="c",
    )


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_split_tool_results():
    segs = split_tool_results(RESPONSE)
    assert [s.kind for s in segs] == ["model", "tool", "model"]
    assert segs[0].text.endswith("</python>")
    assert segs[1].text == " <result>\n42\n</result>"
    assert "".join(s.text for s in segs) == RESPONSE
    with pytest.raises(SFTDataError, match="unclosed <result>"):
        split_tool_results("<python>x</python> <result> never closed")


def test_sequence_is_what_the_rollout_sees(tokenizer):
    """prompt = chat template with add_generation_prompt; then generated ids, the separately tokenised
    tool result, more generated ids and the EOS (<|im_end|>) the model stops with."""
    conv = _conv()
    enc = encode_conversation(conv, tokenizer)
    prompt_text = apply_chat_template(tokenizer, conv.messages[:-1])
    prompt = tokenizer.apply_chat_template(conv.messages[:-1], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert prompt == _ids(tokenizer, prompt_text)
    head, result, tail = (s.text for s in split_tool_results(RESPONSE))
    expected = prompt + _ids(tokenizer, head) + _ids(tokenizer, result) + _ids(tokenizer, tail)
    assert enc.input_ids == [*expected, tokenizer.eos_token_id]
    # decoding gives exactly the chat-template rendering of the full conversation, minus the final "\n"
    full = tokenizer.apply_chat_template(conv.messages, tokenize=False)
    assert tokenizer.decode(enc.input_ids) == full.rstrip("\n")


def test_labels_mask_prompt_and_tool_results(tokenizer):
    enc = encode_conversation(_conv(), tokenizer)
    trained = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE_INDEX]
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    text = tokenizer.decode(trained)
    assert text.startswith("<think> compute")
    assert "<result>" not in text and "42\n" not in text and "What is 6" not in text
    assert text.endswith("</answer><|im_end|>")
    assert enc.labels[-1] == tokenizer.eos_token_id  # the model learns to stop
    first = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert all(k == 0 for k in enc.kinds[:first])


def test_reference_parity_trains_on_tool_results(tokenizer):
    masked = encode_conversation(_conv(), tokenizer)
    parity = encode_conversation(_conv(), tokenizer, mask_tool_results=False)
    assert parity.input_ids == masked.input_ids
    text = tokenizer.decode([lab for lab in parity.labels if lab != IGNORE_INDEX])
    assert "<result>\n42\n</result>" in text
    assert parity.n_trained == masked.n_trained + sum(k == 2 for k in masked.kinds)


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    conv = Conversation(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "<answer> \\boxed{1} </answer>"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "<answer> \\boxed{2} </answer>"},
        ]
    )
    enc = encode_conversation(conv, tokenizer)
    text = tokenizer.decode([lab for lab in enc.labels if lab != IGNORE_INDEX])
    assert text == "<answer> \\boxed{1} </answer><|im_end|><answer> \\boxed{2} </answer><|im_end|>"
    assert tokenizer.decode(enc.input_ids) == tokenizer.apply_chat_template(
        conv.messages, tokenize=False
    ).rstrip("\n")


def test_overlong_truncate_or_drop(tokenizer):
    full = encode_conversation(_conv(), tokenizer)
    n = len(full) - 5
    cut = encode_conversation(_conv(), tokenizer, max_length=n)
    assert cut.truncated and cut.input_ids == full.input_ids[:n] and cut.labels == full.labels[:n]
    assert encode_conversation(_conv(), tokenizer, max_length=n, overlong="drop") is None
    # nothing trainable left inside the window
    assert encode_conversation(_conv(), tokenizer, max_length=10) is None


def test_synthetic_traces_encode_within_the_preset_length(tokenizer, synthetic_traces):
    from appo.config import load_config

    max_length = load_config("sft_default").sft.max_length
    for conv in synthetic_traces:
        enc = encode_conversation(conv, tokenizer)
        assert len(enc) <= max_length
        assert enc.n_trained > 20
