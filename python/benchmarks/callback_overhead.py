"""Overhead of a Python energy: the DEM score target on GMM-40 written in numpy (through
idem.Target.from_function) against the built-in Rust GMM-40, at the gmm-idem preset's batch
(B = 512 points, K = 500 Monte-Carlo samples, σ_max = 50 in target units).

    python python/benchmarks/callback_overhead.py [--rounds 3] [--repeats 10] [--json]

Each target is timed in blocks of `repeats` consecutive estimates (after one warm-up), the blocks
taken in turn over `rounds` rounds so that the machine's drift hits all alike; figures are medians
over all repeats, the ratio is of medians (issue goal: ≤ 3×). Timing one repeat of each in strict
alternation instead made the built-in target ~40% slower (cold caches after numpy) and flattered
the ratio; consecutive repeats give the built-in target its best figure. Also
printed: the same callback with a function that returns at once (idem's own cost of calling
Python: copying, drawing, accumulating), a float64 numpy implementation, and the numpy function
alone. Time it alone.
"""

import argparse
import json
import statistics
import time

import numpy as np

import idem
from idem import _idem

MEANS, SCALES = _idem.gmm40_table()  # [40, 2] each; uniform weights
INV_VAR = 1.0 / SCALES**2
LOG_NORM = -np.log(SCALES).sum(1) - np.log(2 * np.pi) - np.log(len(MEANS))
# log N_k(x) = A_k · [x, x², 1] (diagonal Gaussians): one matrix product per block of rows
A = np.concatenate(
    [MEANS * INV_VAR, -0.5 * INV_VAR, (LOG_NORM - 0.5 * (MEANS**2 * INV_VAR).sum(1))[:, None]], 1
)  # [40, 5]
# ∇log p = Σ_k r_k (μ_k − x)/σ_k² = G[:2]·r − x ⊙ G[2:]·r, r the responsibilities
G = np.concatenate([MEANS * INV_VAR, INV_VAR], 1).T  # [4, 40]
# rows per block. Concurrent calls (the default): 2048, so that the [40, rows] float32 temporaries
# (320 KB) stay in each core's L2 and idem's two calls (one per thread; numpy releases the GIL
# inside each operation) run side by side (at 8192 they spill to the shared L3 and the pair ran
# slower than one call). One call at a time (concurrent=False): 8192.
CHUNK = 2048
CHUNK_ONE_AT_A_TIME = 8192


def make_gmm40(dtype, chunk=None):
    """log p and ∇log p of GMM-40 in numpy, computed in `dtype` (float32: numpy's exp is about
    twice as fast; the built-in target computes in f32 too), in blocks of `chunk` rows."""
    a, g = A.astype(dtype), G.astype(dtype)
    rows = chunk or CHUNK

    def gmm40(x: np.ndarray):
        n, d = x.shape
        lp = np.empty(n, dtype)
        grad = np.empty((n, d), dtype)
        feats = np.empty((2 * d + 1, rows), dtype)
        for s in range(0, n, rows):
            c = min(rows, n - s)
            fe = feats[:, :c]
            fe[:d] = x[s : s + c].T
            np.square(fe[:d], out=fe[d : 2 * d])
            fe[2 * d] = 1.0
            logits = a @ fe  # [40, c]
            m = logits.max(0)
            logits -= m
            # exp of a very negative float64 takes libm's slow path; float32 flushes to 0
            if dtype == np.float64:
                np.maximum(logits, -700.0, out=logits)
            np.exp(logits, out=logits)
            tot = logits.sum(0)
            lp[s : s + c] = m + np.log(tot)
            moments = g @ logits
            moments /= tot
            grad[s : s + c] = (moments[:d] - fe[:d] * moments[d:]).T
        return lp, grad

    return gmm40


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    f32, f64 = make_gmm40(np.float32), make_gmm40(np.float64)
    builtin = idem.Target("gmm40")
    targets = {
        "numpy_f32": idem.Target.from_function(f32, dim=2, name="gmm40-numpy32"),
        "numpy_f32_one_at_a_time": idem.Target.from_function(
            make_gmm40(np.float32, CHUNK_ONE_AT_A_TIME), dim=2, name="gmm40-numpy32-1", concurrent=False
        ),
        "numpy_f64": idem.Target.from_function(f64, dim=2, name="gmm40-numpy64"),
    }
    null = {}

    def instant(x):
        n = x.shape[0]
        if n not in null:
            null[n] = (np.zeros(n), np.zeros((n, 2)))
        return null[n]

    targets["null_function"] = idem.Target.from_function(instant, dim=2, name="null")
    x = np.random.default_rng(0).uniform(-45, 45, size=(512, 2))
    # the implementations agree with the built-in target
    lb, gb = builtin.log_prob_grad(x)
    for name, tol in [("numpy_f32", 1e-3), ("numpy_f64", 1e-9)]:
        ln, gn = targets[name].log_prob_grad(x)
        assert np.allclose(lb, ln, rtol=tol, atol=tol) and np.allclose(gb, gn, rtol=tol, atol=tol), name
    times = {k: [] for k in ["builtin", *targets]}
    for _ in range(a.rounds):
        times["builtin"] += builtin._t.bench_dem_target(x, 500, 50.0, a.repeats)
        for name, t in targets.items():
            times[name] += t._t.bench_dem_target(x, 500, 50.0, a.repeats)
    res = {k: statistics.median(v) for k, v in times.items()}
    for name in targets:
        res["ratio_" + name] = res[name] / res["builtin"]
    # the numpy function alone on as many configurations, one call
    xs = np.random.default_rng(1).uniform(-45, 45, size=(512 * 500, 2))
    alone = []
    for _ in range(max(3, a.repeats)):
        t0 = time.perf_counter()
        f32(xs)
        alone.append((time.perf_counter() - t0) * 1e3)
    res["numpy_f32_function_alone"] = statistics.median(alone)
    res["all"] = times
    if a.json:
        print(json.dumps(res))
        return
    print(f"DEM target, GMM-40, B = 512, K = 500 (256 000 configurations), medians of "
          f"{a.rounds} x {a.repeats}:")
    print(f"  built-in (Rust)                  {res['builtin']:8.2f} ms")
    print(f"  numpy float32 through callback   {res['numpy_f32']:8.2f} ms   "
          f"ratio {res['ratio_numpy_f32']:.2f}x  (goal <= 3x)")
    print(f"  the same, concurrent=False       {res['numpy_f32_one_at_a_time']:8.2f} ms   "
          f"ratio {res['ratio_numpy_f32_one_at_a_time']:.2f}x  (one call at a time, pipelined)")
    print(f"  numpy float64 through callback   {res['numpy_f64']:8.2f} ms   "
          f"ratio {res['ratio_numpy_f64']:.2f}x")
    print(f"  a function returning at once     {res['null_function']:8.2f} ms   "
          f"ratio {res['ratio_null_function']:.2f}x  (idem's own cost of a Python energy)")
    print(f"  the float32 numpy function alone {res['numpy_f32_function_alone']:8.2f} ms   "
          "(one call on all 256 000 configurations)")


if __name__ == "__main__":
    main()
