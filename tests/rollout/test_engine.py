from __future__ import annotations

import math

import torch

from appo.rollout.engine import HFEngine, SamplingParams, StopMatcher, logprob_entropy_reference


def _max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_logprobs_and_entropies_match_full_forward_across_rounds(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    prompts = [
        tok("Hello there, how are").input_ids,
        tok("x").input_ids,
        tok("A longer prompt with words").input_ids,
    ]
    seqs = [engine.new_sequence(p) for p in prompts]
    gen = torch.Generator().manual_seed(0)
    first = engine.sample(seqs, SamplingParams(temperature=0.7), [12, 5, 20], gen)
    appended = tok(" <result>\n42\n</result>", add_special_tokens=False).input_ids
    for s in seqs:
        s.extend(appended)
    second = engine.sample(seqs, SamplingParams(temperature=0.7), [6, 6, 6], gen)
    for p, a, b in zip(prompts, first, second, strict=True):
        assert len(a.tokens) == len(a.logprobs) == len(a.entropies)
        full = p + a.tokens + appended + b.tokens
        lp, ent = logprob_entropy_reference(model, full, temperature=0.7)
        n1, n2 = len(p), len(p) + len(a.tokens) + len(appended)
        assert _max_diff(a.logprobs, lp[n1 : n1 + len(a.tokens)]) < 1e-4
        assert _max_diff(b.logprobs, lp[n2:]) < 1e-4
        assert _max_diff(a.entropies, ent[n1 : n1 + len(a.tokens)]) < 1e-4
        assert _max_diff(b.entropies, ent[n2:]) < 1e-4
    assert [len(o.tokens) for o in first] == [12, 5, 20]


def test_same_seed_same_tokens_and_greedy_is_argmax(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)

    def run(seed):
        seqs = [engine.new_sequence(tok("abc def").input_ids) for _ in range(3)]
        outs = engine.sample(seqs, SamplingParams(), [15] * 3, torch.Generator().manual_seed(seed))
        return [o.tokens for o in outs]

    assert run(1) == run(1)
    assert run(1) != run(2)
    seq = engine.new_sequence(tok("abc def").input_ids)
    out = engine.sample([seq], SamplingParams(do_sample=False), [4])[0]
    ids = tok("abc def").input_ids
    for t in out.tokens:
        with torch.no_grad():
            assert t == int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        ids = [*ids, t]


def test_stop_string_spanning_tokens_is_caught(tiny):
    _, tok = tiny
    stop_ids = tok.encode("</python>", add_special_tokens=False)
    assert len(stop_ids) > 1, "the test needs a stop string that spans several tokens"
    matcher = StopMatcher(tok, ["</python>", "</search>"])
    text_ids = tok.encode("print(1)</python> more", add_special_tokens=False)
    hits = [matcher.match(text_ids[: i + 1]) for i in range(len(text_ids))]
    first = next(i for i, h in enumerate(hits) if h)
    assert hits[first] == "</python>"
    assert tok.decode(text_ids[: first + 1]).endswith("</python>")
    assert not any(hits[:first])


def test_top_k_one_equals_greedy(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    a = engine.sample(
        [engine.new_sequence(tok("q").input_ids)],
        SamplingParams(top_k=1),
        [8],
        torch.Generator().manual_seed(3),
    )[0]
    b = engine.sample([engine.new_sequence(tok("q").input_ids)], SamplingParams(do_sample=False), [8])[0]
    assert a.tokens == b.tokens
    assert all(not math.isnan(x) for x in a.logprobs)


def test_sequences_differing_only_in_last_token_keep_their_own_context(tiny):
    """Prefill must not merge sequences whose pending tokens differ only in the last one (the shape of two
    sibling branches that split at their first divergent token): each continues from its own context."""
    model, tok = tiny
    engine = HFEngine(model, tok)
    base = tok("The quick brown fox jumps over the").input_ids
    prompts = [[*base, tok(" lazy").input_ids[0]], [*base, tok(" sleepy").input_ids[0]], [*base, 13]]
    assert len({tuple(p[:-1]) for p in prompts}) == 1 and len({p[-1] for p in prompts}) == 3
    seqs = [engine.new_sequence(p) for p in prompts]
    outs = engine.sample(seqs, SamplingParams(), [10] * 3, torch.Generator().manual_seed(3))
    for p, out, seq in zip(prompts, outs, seqs, strict=True):
        lp, ent = logprob_entropy_reference(model, p + out.tokens)
        assert _max_diff(out.logprobs, lp[len(p) :]) < 1e-4
        assert _max_diff(out.entropies, ent[len(p) :]) < 1e-4
        assert seq.history == p + out.tokens

    # Forks of one cached prefix that then diverge in their last pending token (branches of one parent).
    root = engine.new_sequence(base)
    engine.sample([root], SamplingParams(), [3], torch.Generator().manual_seed(0))
    forks = [root.fork() for _ in range(2)]
    forks[0].extend([tok(" cat").input_ids[0]])
    forks[1].extend([tok(" dog").input_ids[0]])
    outs = engine.sample(forks, SamplingParams(), [6, 6], torch.Generator().manual_seed(1))
    for seq, out in zip(forks, outs, strict=True):
        context = seq.history[: len(seq.history) - len(out.tokens)]
        lp, _ = logprob_entropy_reference(model, seq.history)
        assert _max_diff(out.logprobs, lp[len(context) :]) < 1e-4
