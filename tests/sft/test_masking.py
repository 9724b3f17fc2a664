"""Gradients are zero for prompt and tool-result tokens (tiny model)."""

from __future__ import annotations

import torch

from appo.sft import Conversation, encode_conversation, sft_loss
from appo.sft.batching import collate

RESPONSE = (
    "<think> compute </think> <python>\nprint(6 * 7)\n</python> <result>\n42\n</result> "
    "<think> it is 42 </think> <answer> \\boxed{42} </answer>"
)


def _batch(tokenizer, mask_tool_results: bool = True):
    conv = Conversation(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "content": RESPONSE},
        ]
    )
    enc = encode_conversation(conv, tokenizer, mask_tool_results=mask_tool_results)
    short = encode_conversation(
        Conversation(
            [*conv.messages[:2], {"role": "assistant", "content": "<answer> \\boxed{42} </answer>"}]
        ),
        tokenizer,
    )
    return [enc, short], collate([enc, short], tokenizer.pad_token_id)


class _Capture:
    """Keeps the logits of the forward pass so their gradient can be inspected."""

    def __init__(self, model):
        self.model = model
        self.logits = None

    def __call__(self, **kwargs):
        out = self.model(**kwargs)
        out.logits.retain_grad()
        self.logits = out.logits
        return out


def _logit_grads(model, batch, use_logits_to_keep: bool) -> torch.Tensor:
    """|d loss / d logits| per (row, position predicting token t+1), on the full width."""
    cap = _Capture(model)
    model.zero_grad()
    loss, n = sft_loss(cap, batch, use_logits_to_keep=use_logits_to_keep)
    (loss / n).backward()
    grads = cap.logits.grad.abs().sum(-1)  # (B, kept)
    width = batch.input_ids.shape[1]
    full = torch.zeros(batch.input_ids.shape[0], width)
    full[:, width - grads.shape[1] :] = grads
    return full


def test_logit_gradients_vanish_on_prompt_and_tool_result_tokens(tiny):
    model, tokenizer = tiny
    encs, batch = _batch(tokenizer)
    for keep in (True, False):
        g = _logit_grads(model, batch, keep)
        for row, enc in enumerate(encs):
            kinds = enc.kinds
            # position p predicts token p + 1
            for p in range(len(kinds) - 1):
                target_kind = kinds[p + 1]
                if target_kind == 1:
                    assert g[row, p] > 0, (row, p)
                else:  # prompt (0) or tool result (2)
                    assert g[row, p] == 0, (row, p, target_kind)
            assert torch.all(g[row, len(kinds) - 1 :] == 0)  # last token and padding
        assert any(k == 2 for k in encs[0].kinds)


def test_parameter_gradients_equal_a_loss_over_assistant_written_tokens_only(tiny):
    """Independent reference: cross-entropy from full logits over exactly the positions whose next token
    the assistant wrote (kind 1). The SFT loss gives the same parameter gradients; training on tool
    results (reference parity) does not."""
    model, tokenizer = tiny
    encs, batch = _batch(tokenizer)

    def param_grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    terms = [
        torch.nn.functional.cross_entropy(logits[r, p], batch.input_ids[r, p + 1], reduction="sum")
        for r, enc in enumerate(encs)
        for p in range(len(enc) - 1)
        if enc.kinds[p + 1] == 1
    ]
    reference = param_grads(torch.stack(terms).sum() / len(terms))
    loss, n = sft_loss(model, batch)
    assert n == len(terms)
    ours = param_grads(loss / n)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(reference, ours, strict=True))
    _, parity_batch = _batch(tokenizer, mask_tool_results=False)
    loss, n = sft_loss(model, parity_batch)
    parity = param_grads(loss / n)
    assert not all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(reference, parity, strict=True))


def test_tool_results_get_gradient_with_reference_parity(tiny):
    model, tokenizer = tiny
    encs, batch = _batch(tokenizer, mask_tool_results=False)
    g = _logit_grads(model, batch, True)
    tool_pos = [p - 1 for p, k in enumerate(encs[0].kinds) if k == 2]
    assert tool_pos and all(g[0, p] > 0 for p in tool_pos)


def test_shared_prefix_forward_gives_the_same_loss_and_gradients(tiny, synthetic_traces):
    """Rows sharing the system prompt: one prefix forward + repeated KV cache == the plain forward."""
    from appo.sft.trainer import MIN_SHARED_PREFIX, shared_prefix_length

    model, tokenizer = tiny
    encs = [encode_conversation(c, tokenizer) for c in synthetic_traces[:3]]
    batch = collate(encs, tokenizer.pad_token_id)
    assert shared_prefix_length(batch) > MIN_SHARED_PREFIX
    results = []
    for share in (False, True):
        model.zero_grad()
        loss, n = sft_loss(model, batch, share_prefix=share)
        (loss / n).backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    assert abs(l0 - l1) <= 1e-4 * abs(l0)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(g0, g1, strict=True))
