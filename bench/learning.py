"""Learning benchmark: does `appo train` make the agent better, and does APPO beat GRPO and ARPO?

Every method trains from the same SFT warm start of the embedded SmolLM2-135M (preset ``learn_cpu``) on the
same prompts in the same order for each seed (``trainer.seed`` = ``data.seed`` = the seed), with n = 4
rows per prompt (APPO: 2 initial rollouts + 2 branches; GRPO: 4 rollouts; ARPO: 2 + copies after tool
results). The x-axis of every curve is the number of **sampled** tokens (branch tokens count; tool results
do not), so methods that sample less per step are compared at equal cost. Validation is greedy on the
held-out tasks before training and after the last step.

    python bench/learning.py --quick                 # 1 seed, APPO vs GRPO, 2 steps (≤ 10 min on 2 cores)
    python bench/learning.py                         # the full grid: every method, 3 seeds, both task sets
    python bench/learning.py --methods appo,grpo --seeds 1,2,3 --tasks synthetic --steps 16
    python bench/learning.py --report-only           # re-read finished runs, rewrite the table and plots

Runs are subprocesses of ``appo train``; a finished run (``bench_done.json`` in its folder) is never run
again, so an interrupted grid resumes where it stopped. Model weights of finished runs are deleted
(metrics, samples and the report stay). Results: ``<out>/results.md`` and PNG plots; the table is printed.

Task sets: ``synthetic`` (the seeded python/search tool tasks, 8 held out per kind) and ``arpo_qa``
(the QA rows of the shipped ARPO RL data: 5,000 of ``train_10k.parquet`` for training, the 80 of
``valid.parquet`` for validation, reward ``deep_research``; search answered from the shipped 1,000-query
cache, then a local BM25 index over the cache's pages; needs ``../shared/data``). Methods and their
overrides are in ``METHODS``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("APPO_SHARED_DATA", REPO.parent / "shared" / "data"))

APPO = ["algorithm.adv_estimator=appo"]
METHODS: dict[str, list[str]] = {
    # APPO with each FutureValue source.
    "appo_lagged": [*APPO, "algorithm.future_value_source=lagged"],
    "appo_reference": [*APPO, "algorithm.future_value_source=reference"],
    "appo_rollout": [*APPO, "algorithm.future_value_source=rollout"],
    # Baselines (the grpo / arpo presets' algorithm settings on top of learn_cpu).
    "grpo": [
        "algorithm.adv_estimator=grpo",
        "actor_rollout_ref.rollout.initial_rollouts=null",
        "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
    ],
    "arpo": [
        "algorithm.adv_estimator=arpo",
        "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
        "actor_rollout_ref.rollout.beam_size=2",
        "actor_rollout_ref.rollout.branch_probability=0.5",
        "actor_rollout_ref.rollout.entropy_weight=0.2",
    ],
    # The paper's ablations (on APPO with the lagged FutureValue).
    "appo_bs_entropy_only": [*APPO, "algorithm.branching_score=entropy"],
    "appo_no_future_kl_loss": [*APPO, "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"],
    "appo_single_group": [*APPO, "algorithm.dual_group=false"],
    "appo_scale_reference": [*APPO, "algorithm.reward_scale_mode=reference"],
}
QUICK_METHODS = ["appo_lagged", "grpo"]


def _qa_subset(src: Path, dst: Path) -> Path:
    """The ``ability == "qa"`` rows of an ARPO RL parquet file (written once into the bench folder)."""
    if not dst.is_file():
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(src)
        pq.write_table(table.filter(pc.equal(table["ability"], "qa")), dst)
    return dst


def task_overrides(task: str, out: Path) -> list[str]:
    if task == "synthetic":
        return []
    if task == "arpo_qa":
        rl, cache = SHARED / "rl", SHARED / "search" / "search_cache.json"
        for path in (rl / "train_10k.parquet", rl / "valid.parquet", cache):
            if not path.is_file():
                raise SystemExit(
                    f"task set arpo_qa needs {path} (set APPO_SHARED_DATA to the shared data folder)"
                )
        from appo.tools import corpus_from_search_cache

        out.mkdir(parents=True, exist_ok=True)
        corpus = out / "arpo_search_cache_corpus.jsonl"
        if not corpus.is_file():
            corpus_from_search_cache(cache, corpus)
        train = _qa_subset(rl / "train_10k.parquet", out / "arpo_train_qa.parquet")
        val = _qa_subset(rl / "valid.parquet", out / "arpo_valid_qa.parquet")
        return [
            f"data.train_files=[{train}]",
            f"data.val_files=[{val}]",
            "data.truncation=left",
            "custom_reward_function.name=deep_research",
            f"actor_rollout_ref.rollout.tools.tool_instances.search.params.cache_file={cache}",
            f"actor_rollout_ref.rollout.tools.tool_instances.search.params.corpus={corpus}",
        ]
    raise SystemExit(f"unknown task set {task!r}: synthetic or arpo_qa")


def run_one(out: Path, task: str, method: str, seed: int, steps: int, extra: list[str], log: Path) -> Path:
    """Train one (task, method, seed) unless already done; returns its run folder."""
    run_dir = out / task / method / f"seed{seed}"
    done = run_dir / "bench_done.json"
    if done.is_file():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run restarts from scratch: partial curves are not comparable
    args = [
        sys.executable,
        "-m",
        "appo",
        "train",
        "--config",
        "learn_cpu",
        *task_overrides(task, out),
        *METHODS[method],
        f"trainer.seed={seed}",
        f"data.seed={seed}",
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps}",
        f"trainer.default_local_dir={run_dir}",
        *extra,
        "--no-report",
    ]
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{task}/{method}/seed{seed} failed (exit {proc.returncode}); see {log}")
    for heavy in ("checkpoints", "final"):
        shutil.rmtree(run_dir / heavy, ignore_errors=True)
    done.write_text(json.dumps({"wall_s": wall, "args": args}, indent=1) + "\n")
    return run_dir


def read_run(run_dir: Path) -> dict[str, Any]:
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    done = json.loads((run_dir / "bench_done.json").read_text())
    vals = [r for r in records if "val/reward_mean" in r]
    steps = [r for r in records if r.get("step", 0) > 0 and "critic/score/init_mean" in r]
    tokens, curve = 0.0, []
    for r in steps:
        tokens += r.get("rollout/tokens_sampled", 0.0) + r.get("branch_rollout/tokens_sampled", 0.0)
        curve.append((tokens, r["critic/score/init_mean"]))
    return {
        "val_before": vals[0]["val/reward_mean"] if vals and vals[0]["step"] == 0 else math.nan,
        "format_before": vals[0]["val/format_ok"] if vals and vals[0]["step"] == 0 else math.nan,
        "val_after": vals[-1]["val/reward_mean"] if vals and vals[-1]["step"] > 0 else math.nan,
        "format_after": vals[-1]["val/format_ok"] if vals and vals[-1]["step"] > 0 else math.nan,
        "tokens": tokens,
        "wall_s": float(done["wall_s"]),
        "curve": curve,
        "train_reward_last": steps[-1]["critic/score/init_mean"] if steps else math.nan,
    }


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(out: Path, tasks: list[str], methods: list[str], seeds: list[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# bench/learning.py results", ""]
    for task in tasks:
        runs = {
            m: [
                read_run(out / task / m / f"seed{s}")
                for s in seeds
                if (out / task / m / f"seed{s}" / "bench_done.json").is_file()
            ]
            for m in methods
        }
        runs = {m: r for m, r in runs.items() if r}
        if not runs:
            continue
        n_seeds = {len(r) for r in runs.values()}
        lines += [
            f"## Task set `{task}` (seeds: {', '.join(map(str, seeds))}; mean ± std over seeds where > 1)",
            "",
            "| method | seeds | val reward before | val reward after | Δ | well-formed before | well-formed after "
            "| train reward, last step | sampled tokens | wall time (min) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        base = [r["val_before"] for rs in runs.values() for r in rs]
        base_fmt = [r["format_before"] for rs in runs.values() for r in rs]
        lines.append(
            f"| untrained warm start (baseline) | – | {_ms(base)} | – | – | {_ms(base_fmt, 2)} | – | – | – | – |"
        )
        for m, rs in runs.items():
            delta = [r["val_after"] - r["val_before"] for r in rs]
            lines.append(
                f"| {m} | {len(rs)} | {_ms([r['val_before'] for r in rs])} | {_ms([r['val_after'] for r in rs])} "
                f"| {_ms(delta)} | {_ms([r['format_before'] for r in rs], 2)} | {_ms([r['format_after'] for r in rs], 2)} "
                f"| {_ms([r['train_reward_last'] for r in rs])} | {_ms([r['tokens'] for r in rs], 0)} "
                f"| {_ms([r['wall_s'] / 60 for r in rs], 1)} |"
            )
        if len(n_seeds) > 1:
            lines.append("")
            lines.append("Methods have different numbers of finished seeds; compare with care.")
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, rs in runs.items():
            for k, r in enumerate(rs):
                xs, ys = zip(*r["curve"], strict=True) if r["curve"] else ((), ())
                ax.plot(
                    xs,
                    ys,
                    marker=".",
                    alpha=0.7,
                    color=f"C{list(runs).index(m)}",
                    label=m if k == 0 else None,
                )
        ax.set_xlabel("sampled tokens (cumulative, branch tokens included)")
        ax.set_ylabel("training reward (initial rollouts)")
        ax.set_title(f"{task}: training reward vs sampled tokens (one line per seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{task}_reward_vs_tokens.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = list(runs)
        before = [statistics.mean(r["val_before"] for r in runs[m]) for m in names]
        after = [statistics.mean(r["val_after"] for r in runs[m]) for m in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after")
        for x, m in zip(xs, names, strict=True):
            ax.scatter([x + 0.2] * len(runs[m]), [r["val_after"] for r in runs[m]], color="k", s=8, zorder=3)
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("greedy validation reward")
        ax.set_title(f"{task}: validation before and after (dots: seeds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{task}_validation.png", dpi=110)
        plt.close(fig)
        lines += [
            "",
            f"![reward vs tokens]({task}_reward_vs_tokens.png)",
            f"![validation]({task}_validation.png)",
            "",
        ]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="1 seed, appo_lagged vs grpo, 2 steps, 4 validation tasks"
    )
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--tasks", default="synthetic,arpo_qa")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--out", default="runs/bench/learning")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the table and plots")
    ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides for every run")
    args = ap.parse_args(argv)
    methods, tasks, seeds, steps, extra = (
        args.methods.split(","),
        args.tasks.split(","),
        args.seeds,
        args.steps,
        args.overrides,
    )
    out = Path(args.out).resolve()  # runs are subprocesses started in the repository root
    if args.quick:
        methods, tasks, seeds, steps = QUICK_METHODS, ["synthetic"], "1", 2
        extra = ["data.val_batch_size=4", *extra]
        out = out.with_name(out.name + "-quick")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    seed_list = [int(s) for s in seeds.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.log"
    if not args.report_only:
        todo = [(t, m, s) for t in tasks for s in seed_list for m in methods]
        for k, (t, m, s) in enumerate(todo, 1):
            print(f"[{k}/{len(todo)}] {t} {m} seed {s} …", flush=True)
            t0 = time.perf_counter()
            run_one(out, t, m, s, steps, extra, log)
            print(f"    done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    print(summarise(out, tasks, methods, seed_list))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
