"""Overhead of a Python energy: the DEM score target on GMM-40 written in numpy (through
idem.Target.from_function) against the built-in Rust GMM-40, at the gmm-idem preset's batch
(B = 512 points, K = 500 Monte-Carlo samples, σ_max = 50 in target units).

    python python/benchmarks/callback_overhead.py [--repeats 20]

Prints the median milliseconds of each and their ratio (issue goal: ≤ 3×). Time it alone.
"""

import argparse
import json
import statistics
import time

import numpy as np

import idem
from idem import _idem

MEANS, SCALES = _idem.gmm40_table()
INV_VAR = 1.0 / SCALES**2  # [40, 2]
LOG_NORM = -np.log(SCALES).sum(1) - np.log(2 * np.pi) - np.log(len(MEANS))  # uniform weights
MU_IV = MEANS * INV_VAR  # [40, 2]
MU2 = (MEANS**2 * INV_VAR).sum(1)  # [40]
CHUNK = 4096  # rows per block: the [rows, 40] temporaries stay in cache


def gmm40_numpy(x: np.ndarray):
    """log p and ∇log p of GMM-40 (a mixture of 40 diagonal Gaussians, uniform weights)."""
    n = x.shape[0]
    lp = np.empty(n)
    grad = np.empty_like(x)
    for s in range(0, n, CHUNK):
        xc = x[s : s + CHUNK]
        # log N_k(x) = −½ Σ_d (x_d − μ_kd)² / σ_kd² + log norm_k
        q = (xc**2) @ INV_VAR.T - 2.0 * (xc @ MU_IV.T) + MU2
        lc = LOG_NORM - 0.5 * q
        m = lc.max(1, keepdims=True)
        r = np.exp(lc - m)
        tot = r.sum(1, keepdims=True)
        lp[s : s + CHUNK] = (m + np.log(tot))[:, 0]
        r /= tot  # responsibilities
        # ∇log p = Σ_k r_k (μ_k − x) / σ_k²
        grad[s : s + CHUNK] = r @ MU_IV - xc * (r @ INV_VAR)
    return lp, grad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    builtin = idem.Target("gmm40")
    numpy_t = idem.Target.from_function(gmm40_numpy, dim=2, name="gmm40-numpy")
    x = np.random.default_rng(0).uniform(-45, 45, size=(512, 2))
    # the two agree
    lb, gb = builtin.log_prob_grad(x)
    ln, gn = numpy_t.log_prob_grad(x)
    assert np.allclose(lb, ln, rtol=1e-9, atol=1e-9) and np.allclose(gb, gn, rtol=1e-8, atol=1e-9)
    res = {}
    for name, t in [("builtin", builtin), ("numpy", numpy_t)]:
        ms = t._t.bench_dem_target(x, 500, 50.0, a.repeats)
        res[name] = statistics.median(ms)
        res[name + "_all"] = ms
    res["ratio"] = res["numpy"] / res["builtin"]
    # the numpy function alone on the same number of configurations, one call, one thread
    xs = np.random.default_rng(1).uniform(-45, 45, size=(512 * 500, 2))
    alone = []
    for _ in range(max(3, a.repeats // 4)):
        t0 = time.perf_counter()
        gmm40_numpy(xs)
        alone.append((time.perf_counter() - t0) * 1e3)
    res["numpy_function_alone"] = statistics.median(alone)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"DEM target, GMM-40, B = 512, K = 500, median of {a.repeats}:")
        print(f"  built-in (Rust)        {res['builtin']:8.2f} ms")
        print(f"  numpy through callback {res['numpy']:8.2f} ms")
        print(f"  ratio                  {res['ratio']:8.2f}x  (goal <= 3x)")
        print(f"  the numpy function alone on the 256 000 configurations (one call, one thread): "
              f"{res['numpy_function_alone']:.2f} ms")


if __name__ == "__main__":
    main()
