"""Benchmarks of the APPO algorithm core against the reference formulations, measured in the same run.

    python bench/algo.py            # full sizes (a few minutes on 2 CPU cores, < 8 GiB peak)
    python bench/algo.py --quick    # smoke sizes (seconds), used by tests/algo/test_bench_smoke.py

1. ``discounted_future_sum`` (blocked reverse scan, O(B·L·C)) vs
   a. the reference FutureKL formulation of the loss (spec §1.10 step 4, §5.D): for every column chunk of
      128 positions build the L×chunk decay block γ^{k−t}·[k ≥ t] and matmul — O(B·L²);
   b. the reference FutureValue path of the branch builder (spec §1.5 steps 3–4): per row, an L×L index
      difference matrix, a mask, γ^{diff}, a matvec, then exp/clamp — O(L²) per row.
   Both baselines are written here from the spec's description (no code copied).
2. ``logprobs_and_entropy`` (chunked, custom backward) vs the naive full-logit computation
   (logits = h Wᵀ in float32, log_softmax + gather, entropy = lse − Σ softmax·logits), forward + backward
   of Σ log p to the hidden states. Peak memory: every variant runs in a *fresh subprocess*; after its
   inputs are allocated the process's peak-RSS counter is reset (``/proc/self/clear_refs`` = 5, else the
   current RSS is used as the baseline of ``ru_maxrss``) and the reported number is peak RSS − RSS before
   the computation, i.e. every byte the computation touched at its high-water mark. The workers run with
   ``MALLOC_MMAP_THRESHOLD_=1048576`` so glibc maps every block ≥ 1 MiB separately and returns it on free:
   RSS then follows the live allocations of either variant instead of glibc's heap caching. The lm_head weight is frozen here: its
   own V×H gradient buffer would be identical in both variants (it is model state, not activation memory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from appo.algo import discounted_future_sum, future_values, logprobs_and_entropy

# ----------------------------------------------------------------------------------------------- baselines


def reference_chunked_matmul_fkl(x: torch.Tensor, gamma: float, chunk: int = 128) -> torch.Tensor:
    """FKL[:, t] = Σ_k x[:, k]·γ^{k−t}·[k ≥ t], one L×chunk decay block per column chunk (O(B·L²))."""
    length = x.shape[-1]
    out = torch.empty_like(x)
    k = torch.arange(length, dtype=x.dtype)[:, None]
    for c0 in range(0, length, chunk):
        t = torch.arange(c0, min(length, c0 + chunk), dtype=x.dtype)[None, :]
        diff = k - t
        block = torch.where(diff >= 0, torch.pow(gamma, diff.clamp(min=0)), torch.zeros((), dtype=x.dtype))
        out[:, c0 : c0 + block.shape[1]] = x @ block
    return out


def reference_per_row_future_values(
    cur: torch.Tensor, roll: torch.Tensor, mask: torch.Tensor, gamma: float, eps: float
) -> torch.Tensor:
    """Per row: an L×L int64 offset matrix, its ≥ 0 mask, γ^{offset}, a matvec, exp/clamp (O(L²) per row)."""
    rows, length = cur.shape
    out = torch.empty(rows, length)
    for j in range(rows):
        ell = (cur[j] - roll[j]) * mask[j]
        idx = torch.arange(length)
        offset = idx[None, :] - idx[:, None]  # [t, k] = k − t
        upper = offset >= 0
        decay = torch.where(upper, torch.pow(torch.tensor(gamma), offset.float()), torch.zeros(()))
        f = decay @ ell
        v = torch.exp(f.clamp(-20, 20))
        out[j] = v.clamp(1 - eps, 1 + eps) if eps > 0 else v
    return out


def naive_logprobs_entropy(hidden, weight, targets):
    logits = (hidden @ weight.t()).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    with torch.no_grad():
        lse = torch.logsumexp(logits, dim=-1)
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


# ----------------------------------------------------------------------------------------------- helpers


def timed(fn, repeat: int = 1):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return "VmHWM reset"
    except OSError:
        return "ru_maxrss"


def mem_worker(variant: str, vocab: int, tokens: int, hdim: int, chunk: int, out_path: str) -> None:
    """Runs in a fresh process: one variant, forward + backward; writes results and peak memory."""
    torch.manual_seed(0)
    hidden = (torch.randn(tokens, hdim) * 0.5).requires_grad_(True)
    weight = torch.randn(vocab, hdim) * (1.0 / math.sqrt(hdim))
    targets = torch.randint(0, vocab, (tokens,))
    # warm-up on a tiny problem: thread pools and kernel caches are set up before the measurement
    wh = torch.randn(4, hdim, requires_grad=True)
    fn = naive_logprobs_entropy if variant == "naive" else logprobs_and_entropy
    fn(wh, weight[:64], targets[:4] % 64)[0].sum().backward()
    del wh
    before = _rss_bytes("VmRSS")
    method = _reset_peak()
    t0 = time.perf_counter()
    if variant == "naive":
        logp, ent = naive_logprobs_entropy(hidden, weight, targets)
    else:
        logp, ent = logprobs_and_entropy(hidden, weight, targets, chunk_size=chunk)
    logp.sum().backward()
    elapsed = time.perf_counter() - t0
    if method == "VmHWM reset":
        peak = _rss_bytes("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save({"logp": logp.detach(), "ent": ent.detach(), "grad": hidden.grad}, out_path)
    print(json.dumps({"peak_delta": peak - before, "time": elapsed, "method": method}))


def run_mem_variant(variant: str, vocab: int, tokens: int, hdim: int, chunk: int, tmp: str):
    out_path = os.path.join(tmp, f"{variant}_{vocab}.pt")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_mem-worker", variant, str(vocab), str(tokens)]
    cmd += [str(hdim), str(chunk), out_path]
    # a fixed glibc mmap threshold: every large buffer is mmapped and unmapped on free, so RSS tracks live
    # allocations for both variants alike (glibc's dynamic threshold would keep freed 10–40 MB chunks resident)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    return info, torch.load(out_path)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke sizes (seconds)")
    ap.add_argument("--_mem-worker", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._mem_worker:
        v, vocab, tokens, hdim, chunk, out = args._mem_worker
        mem_worker(v, int(vocab), int(tokens), int(hdim), int(chunk), out)
        return 0

    if args.quick:
        scan_b, scan_l, fv_b, fv_l = 4, 1024, 2, 512
        vocabs, tokens, hdim, chunk = (4096,), 256, 64, 32
    else:
        scan_b, scan_l, fv_b, fv_l = 32, 10_000, 32, 4096
        vocabs, tokens, hdim, chunk = (49_152, 151_936), 2048, 256, 64
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quick={args.quick}")

    # 1a. FutureKL scan vs chunked matmul
    gamma = 2.0 ** (-1.0 / 64)
    x = torch.randn(scan_b, scan_l) * 0.05
    m = torch.rand(scan_b, scan_l) > 0.1
    xm = torch.where(m, x, 0.0)
    discounted_future_sum(xm[:, :256], gamma)  # warm-up
    t_scan, f_scan = timed(lambda: discounted_future_sum(xm, gamma), repeat=3)
    t_ref, f_ref = timed(lambda: reference_chunked_matmul_fkl(xm, gamma), repeat=1)
    print("\n[1a] FutureKL  discounted_future_sum vs reference L×chunk matmul")
    print(f"     B={scan_b} L={scan_l} gamma=2^(-1/64)")
    print(f"     {'scan':>12} {'reference':>12} {'speed-up':>10} {'max|diff|':>11}")
    print(
        f"     {t_scan * 1e3:10.1f}ms {t_ref * 1e3:10.1f}ms {t_ref / t_scan:9.1f}x {(f_scan - f_ref).abs().max().item():11.3e}"
    )

    # 1b. FutureValue per-row L×L vs scan
    cur = -torch.rand(fv_b, fv_l) * 2
    roll = cur + torch.randn(fv_b, fv_l) * 0.01
    mk = (torch.rand(fv_b, fv_l) > 0.2).float()
    t_fv, v_scan = timed(lambda: future_values(cur, roll, mk, 1.0, 0.2), repeat=3)
    t_fv_ref, v_ref = timed(lambda: reference_per_row_future_values(cur, roll, mk, 1.0, 0.2), repeat=1)
    print("\n[1b] FutureValue  future_values (scan) vs reference per-row L×L path")
    print(f"     B={fv_b} L={fv_l} gamma=1.0 eps=0.2")
    print(f"     {'scan':>12} {'reference':>12} {'speed-up':>10} {'max|diff|':>11}")
    print(
        f"     {t_fv * 1e3:10.1f}ms {t_fv_ref * 1e3:10.1f}ms {t_fv_ref / t_fv:9.1f}x {(v_scan - v_ref).abs().max().item():11.3e}"
    )

    # 2. chunked log-prob/entropy vs naive full logits
    print("\n[2]  logprobs_and_entropy (chunked) vs naive full-logit, forward + backward, fresh process each")
    print(f"     tokens={tokens} hidden={hdim} chunk_size={chunk} (float32)")
    print(
        f"     {'vocab':>8} {'peak chunked':>13} {'peak naive':>12} {'mem ratio':>10} {'t chunked':>10} {'t naive':>9} "
        f"{'max|dlogp|':>11} {'max|dH|':>9} {'max|dgrad|':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in vocabs:
            ci, cr = run_mem_variant("chunked", vocab, tokens, hdim, chunk, tmp)
            ni, nr = run_mem_variant("naive", vocab, tokens, hdim, chunk, tmp)
            d_lp = (cr["logp"] - nr["logp"]).abs().max().item()
            d_h = (cr["ent"] - nr["ent"]).abs().max().item()
            d_g = (cr["grad"] - nr["grad"]).abs().max().item()
            ratio = ni["peak_delta"] / max(ci["peak_delta"], 1)
            print(
                f"     {vocab:8d} {ci['peak_delta'] / 2**20:11.1f}MB {ni['peak_delta'] / 2**20:10.1f}MB "
                f"{ratio:9.1f}x {ci['time']:9.2f}s {ni['time']:8.2f}s {d_lp:11.2e} {d_h:9.2e} {d_g:11.2e}"
            )
        print(f"     peak memory measured as {ci['method']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
