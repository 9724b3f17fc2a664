"""`appo report RUN_DIR`: a readable account of a run — curves, tool use, and where APPO branched."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)):
            xs.append(int(r["step"]))
            ys.append(float(value))
    return xs, ys


def _split_tokens(samples: list[dict[str, Any]], tokenizer: Any) -> tuple[Counter, Counter, list[float]]:
    """Most frequent split tokens, most frequent high-entropy tokens of initial rollouts, relative split
    positions — the analogues of the paper's Fig. 5/6."""
    split_tokens: Counter[str] = Counter()
    entropy_tokens: Counter[str] = Counter()
    positions: list[float] = []
    for record in samples:
        trajs = record.get("trajectories", [])
        inits = [t for t in trajs if t.get("kind") != "branch"]
        for t in trajs:
            if t.get("kind") == "branch" and 0 <= t.get("parent", -1) < len(inits):
                parent = inits[t["parent"]]
                ids = parent.get("response_ids") or []
                if ids and t["split"] < len(ids):
                    split_tokens[_show(tokenizer, ids[t["split"]])] += 1
                positions.append(t["split"] / max(1, parent.get("response_tokens", 1)))
        for t in inits:
            ents, ids, mask = t.get("entropies") or [], t.get("response_ids") or [], t.get("loss_mask") or []
            scored = [(e, i) for e, i, m in zip(ents, ids, mask, strict=False) if m == 1 and e is not None]
            scored.sort(reverse=True)
            for _, token in scored[: max(1, len(scored) // 20)]:
                entropy_tokens[_show(tokenizer, token)] += 1
    return split_tokens, entropy_tokens, positions


_OPEN_TAGS = ("<python>", "<search>")
_CLOSE_TAGS = ("</python>", "</search>", "</result>")


def _split_contexts(samples: list[dict[str, Any]], tokenizer: Any) -> Counter:
    """Where each branch split sits in its parent: inside a tool call, within 3 tokens after a tool result
    (a tool-call boundary), inside <think>/<answer> text, or elsewhere in free text."""
    out: Counter[str] = Counter()
    for record in samples:
        trajs = record.get("trajectories", [])
        inits = [t for t in trajs if t.get("kind") != "branch"]
        for t in trajs:
            if t.get("kind") != "branch" or not 0 <= t.get("parent", -1) < len(inits):
                continue
            parent, split = inits[t["parent"]], t["split"]
            ids = parent.get("response_ids") or []
            if split >= len(ids):
                continue
            ends = [c["result_span"][1] for c in parent.get("tool_calls", []) if c["result_span"][1] <= split]
            text = tokenizer.decode(ids[: split + 1])
            last_open = max(text.rfind(tag) for tag in _OPEN_TAGS)
            last_close = max(text.rfind(tag) for tag in _CLOSE_TAGS)
            if last_open > last_close:
                out["inside a tool call"] += 1
            elif ends and split - max(ends) < 3:
                out["right after a tool result (≤ 3 tokens)"] += 1
            elif text.rfind("<think>") > text.rfind("</think>"):
                out["inside <think>"] += 1
            elif text.rfind("<answer>") > text.rfind("</answer>"):
                out["inside <answer>"] += 1
            else:
                out["other text"] += 1
    return out


def _show(tokenizer: Any, token: int) -> str:
    text = tokenizer.decode([token]) if tokenizer is not None else str(token)
    return repr(text)[1:-1] or "∅"


def write_report(run_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write ``report.md`` and its PNG plots into ``run_dir``; returns the report path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    if not metrics:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'} is missing or empty: is this a training run?")
    samples = _read_jsonl(run_dir / "samples.jsonl")
    if tokenizer is None:
        tokenizer = _tokenizer_of(run_dir)
    plots: list[tuple[str, str]] = []

    def plot(name: str, title: str, curves: list[tuple[str, str]], ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for key, label in curves:
            xs, ys = _series(metrics, key)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
                drawn = True
        if not drawn:
            plt.close(fig)
            return
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        plots.append((name, title))

    plot(
        "reward.png",
        "Reward: initial rollouts vs branches",
        [("critic/score/init_mean", "initial rollouts"), ("critic/score/branch_mean", "branches")],
        "mean reward",
    )
    val_keys = sorted({k for r in metrics for k in r if k.startswith("val-core/")})
    plot("validation.png", "Validation (greedy)", [(k, k.split("/")[1]) for k in val_keys], "mean reward")
    tool_keys = sorted({k for r in metrics for k in r if k.startswith("rollout/calls/")})
    plot(
        "tool_calls.png", "Tool calls per trajectory", [(k, k.rsplit("/", 1)[1]) for k in tool_keys], "calls"
    )
    plot(
        "format.png",
        "Share of well-formed responses",
        [("critic/format_ok/init", "initial rollouts"), ("critic/format_ok/branch", "branches")],
        "share",
    )

    for record in metrics:
        if "critic/score/branch_mean" in record and "critic/score/init_mean" in record:
            record["report/branch_minus_init"] = (
                record["critic/score/branch_mean"] - record["critic/score/init_mean"]
            )
    plot(
        "branch_gain.png",
        "Branch minus initial-rollout reward per step (> 0: branching found better continuations)",
        [("report/branch_minus_init", "branch mean − init mean")],
        "reward difference",
    )

    z_h = [v for r in samples for t in r.get("trajectories", []) for v in t.get("z_entropy", [])]
    z_f = [v for r in samples for t in r.get("trajectories", []) for v in t.get("z_future", [])]
    if z_h:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, values, label in ((axes[0], z_h, "Z(entropy)"), (axes[1], z_f, "Z(FutureValue)")):
            nonzero = [v for v in values if v != 0.0]
            ax.hist(nonzero or [0.0], bins=40, color="tab:blue")
            ax.set_title(f"{label}: {len(nonzero)}/{len(values)} tokens ≠ 0")
            ax.set_xlabel("z-score")
        fig.tight_layout()
        fig.savefig(run_dir / "zscores.png", dpi=110)
        plt.close(fig)
        plots.append(
            ("zscores.png", "Z-score distributions of the Branching Score's factors (initial rollouts)")
        )
    contexts = _split_contexts(samples, tokenizer) if tokenizer is not None else Counter()

    split_tokens, entropy_tokens, positions = _split_tokens(samples, tokenizer)
    if positions:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(positions, bins=20, range=(0, 1), color="tab:purple")
        ax.set_title("Where branches split (relative position in the parent response)")
        ax.set_xlabel("split position / response length")
        ax.set_ylabel("branches")
        fig.tight_layout()
        fig.savefig(run_dir / "split_positions.png", dpi=110)
        plt.close(fig)
        plots.append(("split_positions.png", "Where branches split"))
    for counter, name, title in (
        (split_tokens, "split_tokens.png", "Most frequently selected split tokens"),
        (entropy_tokens, "entropy_tokens.png", "Most frequent high-entropy tokens"),
    ):
        top = counter.most_common(15)
        if not top:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.barh([t for t, _ in reversed(top)], [c for _, c in reversed(top)], color="tab:green")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        plots.append((name, title))

    last = metrics[-1]
    lines = [f"# Training report: {run_dir.name}", ""]
    config = run_dir / "config.yaml"
    if config.exists():
        import yaml

        tree = yaml.safe_load(config.read_text())
        rollout = tree["actor_rollout_ref"]["rollout"]
        lines += [
            f"- algorithm: **{tree['algorithm']['adv_estimator']}**, model `{tree['actor_rollout_ref']['model']['path']}`",
            f"- rollouts per prompt n = {rollout['n']}, initial = {rollout['initial_rollouts']}, "
            f"prompts per step = {tree['data']['train_batch_size']}, max response = {tree['data']['max_response_length']}",
            f"- steps completed: {last['step']}",
            "",
        ]
    summary_keys = [
        ("critic/score/init_mean", "reward, initial rollouts"),
        ("critic/score/branch_mean", "reward, branches"),
        ("critic/format_ok/init", "well-formed share (initial)"),
        ("rollout/tool_calls_per_trajectory", "tool calls per trajectory"),
        ("branch/strict", "strict branch points"),
        ("branch/fallback", "fallback branch points"),
        ("branch/duplicate", "duplicated branch points"),
        ("actor/pg_loss", "policy loss"),
        ("actor/kl_loss", "KL loss"),
        ("actor/grad_norm", "grad norm"),
        ("timing_s/step", "seconds per step"),
        ("val/reward_mean", "validation reward"),
    ]
    lines += ["| metric | first step | last step |", "|---|---|---|"]
    first = metrics[0]
    for key, label in summary_keys:
        if key in last or key in first:
            lines.append(f"| {label} | {_fmt(first.get(key))} | {_fmt(last.get(key))} |")
    lines.append("")
    branch_totals = [
        ("branch/points", "branch points"),
        ("branch/strict", "strict (both z-scores > 0)"),
        ("branch/fallback", "fallback (best remaining score)"),
        ("branch/duplicate", "duplicates (a prompt with fewer eligible tokens than K)"),
        ("branch/prompts_without_candidates", "prompts with no eligible split token: no branch"),
        ("branch/fork_failures", "branches dropped: tool state could not be forked"),
    ]
    if any(key in m for m in metrics for key, _ in branch_totals):
        lines += ["## Branch statistics (all steps)", "", "| | total |", "|---|---|"]
        for key, label in branch_totals:
            lines.append(f"| {label} | {_fmt(sum(float(m.get(key, 0.0)) for m in metrics))} |")
        lines.append("")
    for name, title in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if contexts:
        total = sum(contexts.values())
        lines += ["## Where splits land", "", "| context | branches | share |", "|---|---|---|"]
        for name, count in contexts.most_common():
            lines.append(f"| {name} | {count} | {count / total:.0%} |")
        lines.append("")
    if split_tokens:
        lines += [
            "## Split tokens vs high-entropy tokens",
            "",
            "| split token | count | high-entropy token | count |",
            "|---|---|---|---|",
        ]
        top_s, top_e = split_tokens.most_common(10), entropy_tokens.most_common(10)
        for i in range(max(len(top_s), len(top_e))):
            s = top_s[i] if i < len(top_s) else ("", "")
            e = top_e[i] if i < len(top_e) else ("", "")
            lines.append(f"| `{s[0]}` | {s[1]} | `{e[0]}` | {e[1]} |")
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _tokenizer_of(run_dir: Path) -> Any:
    from transformers import AutoTokenizer

    for candidate in [
        run_dir / "final",
        *sorted((run_dir / "checkpoints").glob("step_*/model"), reverse=True),
    ]:
        if (candidate / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(candidate, local_files_only=True)
    return None
