"""The workflow from Python on tiny budgets: training a user's function target end to end,
automatic configuration, exceptions during training (checkpoint intact, resumable), runs written
by the CLI loaded from Python, evaluate / mcmc / exact / GridReference."""

import json
import subprocess

import numpy as np
import pytest

import idem
from conftest import TINY


def two_wells(x):
    """Two Gaussian wells at (±2, 0), σ = 0.5, weights 0.7 / 0.3 (normalised)."""
    s2 = 0.25
    la = np.log(0.7) - ((x - [-2.0, 0.0]) ** 2).sum(1) / (2 * s2)
    lb = np.log(0.3) - ((x - [2.0, 0.0]) ** 2).sum(1) / (2 * s2)
    m = np.maximum(la, lb)
    wa, wb = np.exp(la - m), np.exp(lb - m)
    lp = m + np.log(wa + wb) - np.log(2 * np.pi * s2)
    ra = (wa / (wa + wb))[:, None]
    grad = (ra * ([-2.0, 0.0] - x) + (1 - ra) * ([2.0, 0.0] - x)) / s2
    return lp, grad


def test_train_a_function_target_end_to_end(tmp_path):
    t = idem.Target.from_function(two_wells, dim=2, name="two-wells")
    out = tmp_path / "run"
    run = idem.train(t, overrides=TINY, out=out, seed=3, progress=False)
    cfg = run.config
    assert cfg["target"] == "two-wells" and cfg["net"]["kind"] == "mlp" and cfg["epochs"] == 2
    # the automatic configuration measured the target: σ_max covers the wells, σ_b their width
    probe = run.probe
    assert 1.8 < probe["extent"] < 4.0 and 0.3 < probe["sigma_b"] < 0.8, probe
    m = run.metrics
    assert [r["epoch"] for r in m] == [1, 2]
    # every Monte-Carlo sample counts: B·K per step plus the per-epoch generation's none
    assert m[-1]["energy_calls"] >= 2 * 5 * 64 * 32
    assert all(k in m[0] for k in ("loss", "wall_s", "energy_calls", "lr"))
    assert (out / "checkpoint.safetensors").exists() and (out / "samples.npy").exists()
    x = run.sample(300, seed=1)
    assert x.shape == (300, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    # same seed, same samples; a loaded run samples the same
    again = idem.load(out, t).sample(300, seed=1)
    np.testing.assert_array_equal(x, again)
    # the refinement option: MALA steps from the same samples, through the Python energy
    xr = run.sample(300, seed=1, overrides={"refine_steps": 4})
    assert xr.shape == x.shape and np.isfinite(xr).all() and not np.array_equal(xr, x)
    # a user-target run needs its target to sample
    with pytest.raises(ValueError, match="target="):
        idem.load(out).sample(10)
    with pytest.raises(ValueError, match="trained on 'two-wells'"):
        idem.load(out, idem.Target.from_function(two_wells, dim=2, name="other"))
    # resume for one more epoch
    run.resume({"epochs": 3}, progress=False)
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3]
    with pytest.raises(FileExistsError):
        idem.train(t, overrides=TINY, out=out, progress=False)


def test_one_call_at_a_time_trains_the_same_run(tmp_path):
    """concurrent=False (for PyTorch or chunked numpy functions): calls never overlap, and the
    run is the same as with concurrent calls (the DEM target's draws do not depend on how its
    samples are grouped into calls)."""
    import threading

    lock = threading.Lock()
    state = {"now": 0, "most": 0, "calls": 0}

    def watched(x):
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            return two_wells(x)
        finally:
            with lock:
                state["now"] -= 1

    samples = []
    for concurrent in (True, False):
        t = idem.Target.from_function(
            watched, dim=2, name="two-wells", batch_size=300, concurrent=concurrent
        )
        state.update(now=0, most=0, calls=0)
        run = idem.train(t, overrides=TINY, out=tmp_path / f"run-{concurrent}", seed=3, progress=False)
        if not concurrent:
            assert state["most"] == 1 and state["calls"] > 10
        samples.append(run.sample(200, seed=1))
    np.testing.assert_array_equal(samples[0], samples[1])


def test_exception_during_training_stops_with_it_and_keeps_the_checkpoint(tmp_path):
    state = {"calls": 0, "fail_after": None}

    def flaky(x):
        state["calls"] += 1
        if state["fail_after"] is not None and state["calls"] > state["fail_after"]:
            raise ZeroDivisionError("the user's energy failed")
        return two_wells(x)

    t = idem.Target.from_function(flaky, dim=2, name="flaky")
    out = tmp_path / "run"
    # probe and one epoch succeed, then the energy starts failing in the second epoch
    run = idem.train(t, overrides={**TINY, "epochs": 1}, out=out, progress=False)
    state["fail_after"] = state["calls"] + 3
    with pytest.raises(ZeroDivisionError, match="the user's energy failed") as e:
        idem.resume(out, t, {"epochs": 3}, progress=False)
    assert any(fr.name == "flaky" for fr in e.traceback)
    notes = getattr(e.value, "__notes__", [])
    assert any("training stopped at epoch 2" in n and "intact" in n for n in notes), notes
    # the checkpoint of epoch 1 is intact: the run resumes once the energy works again
    assert [r["epoch"] for r in run.metrics] == [1]
    state["fail_after"] = None
    idem.resume(out, t, {"epochs": 2}, progress=False)
    assert [r["epoch"] for r in run.metrics] == [1, 2]


def test_nan_everywhere_is_an_error_not_a_silent_run(tmp_path):
    t = idem.Target.from_function(lambda x: (np.full(len(x), np.nan), np.zeros_like(x)), dim=2, name="nan")
    with pytest.raises(FloatingPointError):
        idem.train(t, overrides=TINY, out=tmp_path / "run", progress=False)


def test_particle_targets_get_the_egnn(tmp_path):
    dw = idem.Target("dw4")
    t = idem.Target.from_function(lambda x: dw.log_prob_grad(x), particles=(4, 2), name="dw4-py")
    run = idem.train(t, overrides={**TINY, "epochs": 1, "num_init_samples": 64}, out=tmp_path / "r", progress=False)
    cfg = run.config
    assert cfg["net"]["kind"] == "egnn" and cfg["data_scale"] == 1.0
    assert 2.0 < cfg["schedule"]["sigma_max"] < 6.0, cfg["schedule"]
    x = run.sample(20, seed=0)
    # mean-free samples
    np.testing.assert_allclose(x.reshape(20, 4, 2).mean(1), 0, atol=1e-4)


def test_a_cli_run_loads_in_python(idem_cli, tmp_path):
    out = tmp_path / "cli-run"
    sets = []
    for k, v in TINY.items():
        sets += ["--set", f"{k}={v}"]
    subprocess.run(
        [str(idem_cli), "--threads", "2", "train", "--preset", "gmm-idem", "--quiet", "--seed", "1",
         "--out", str(out), *sets],
        check=True, capture_output=True,
    )
    run = idem.load(out)
    assert run.config["target"] == "gmm40" and len(run.metrics) == 2
    assert run.summary["epochs"] == 2
    x = run.sample(200, seed=4)
    assert x.shape == (200, 2)
    # the CLI's `idem sample` gives the same numbers
    subprocess.run(
        [str(idem_cli), "sample", "--run", str(out), "-n", "200", "--seed", "4", "--out", str(tmp_path / "s.npy")],
        check=True, capture_output=True,
    )
    np.testing.assert_array_equal(x, np.load(tmp_path / "s.npy"))
    # and the same refined numbers
    subprocess.run(
        [str(idem_cli), "sample", "--run", str(out), "-n", "200", "--seed", "4", "--out", str(tmp_path / "r.npy"),
         "--set", "refine_steps=6"],
        check=True, capture_output=True,
    )
    np.testing.assert_array_equal(run.sample(200, seed=4, overrides={"refine_steps": 6}), np.load(tmp_path / "r.npy"))
    ref = idem.exact("gmm40", 200, seed=77)
    m = run.evaluate(ref, seed=4)
    assert m["w2"] > 0 and "energy_w2" in m and "tv" in m


def test_evaluate_mcmc_exact_and_presets():
    assert "gmm-idem" in idem.presets() and "lj13-fast" in idem.presets()
    a = idem.exact("gmm40", 500, seed=1)
    b = idem.exact("gmm40", 500, seed=2)
    m = idem.evaluate("gmm40", a, b)
    assert 0 < m["w2"] < 10 and m["tv"] < 1
    with pytest.raises(ValueError, match="no exact sampler"):
        idem.exact("dw4", 10, seed=1)
    t = idem.Target.from_function(two_wells, dim=2, name="two-wells")
    x, info = idem.mcmc(t, chains=32, warmup=200, steps=200, thin=2, seed=0, init_std=2.0)
    assert x.shape == (32 * 100, 2) and info["energy_calls"] == t.calls
    assert 0.3 < info["accept"][0] < 0.9
    with pytest.raises(ValueError, match="kernel"):
        idem.mcmc(t, kernel="gibbs")


def test_adjoint_sampling_protocol_matches_the_cli(idem_cli, tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(150, 8)) * 2.0
    b = rng.normal(size=(200, 8)) * 2.0
    m = idem.evaluate("dw4", a, b, aligned=False, protocol="adjoint-sampling", protocol_rows=100)
    assert m["as_rows"] == 100 and m["as_geometric_w2"] > 0 and "as_energy_w2" in m
    np.save(tmp_path / "a.npy", a.astype(np.float32))
    np.save(tmp_path / "b.npy", b.astype(np.float32))
    out = subprocess.run(
        [str(idem_cli), "eval", "--target", "dw4", "--samples", str(tmp_path / "a.npy"), "--reference",
         str(tmp_path / "b.npy"), "--no-aligned", "--json", "--protocol", "adjoint-sampling",
         "--protocol-rows", "100"],
        check=True, capture_output=True, text=True,
    )
    cli = json.loads(out.stdout)
    for k in ("as_geometric_w2", "as_energy_w2", "as_dist_w2"):
        assert abs(cli[k] - m[k]) < 1e-9, (k, cli[k], m[k])
    with pytest.raises(ValueError, match="300 rows|150 generated"):
        idem.evaluate("dw4", a, b, aligned=False, protocol="adjoint-sampling", protocol_rows=300)
    with pytest.raises(ValueError, match="unknown protocol"):
        idem.evaluate("dw4", a, b, protocol="dem")


def test_grid_reference_weights_and_floor():
    t = idem.Target.from_function(two_wells, dim=2, name="two-wells")
    g = idem.GridReference(t, (-5, -3), (5, 3), cells=400)
    w = [b["weight"] for b in g.basins]
    np.testing.assert_allclose(w, [0.7, 0.3], atol=1e-4)
    s = g.sample(5000, seed=1)
    r = g.compare(s, bins=40, floor_sets=3, seed=2)
    assert r["max_basin_error"] < 0.03 and abs(r["tv_excess"]) < 0.02
    assert json.dumps(r)


def test_torch_helper_matches_numpy():
    torch = pytest.importorskip("torch")
    t = idem.Target.from_torch(lambda x: -0.5 * (x**2).sum(1) - torch.log(1 + x[:, 0] ** 2), dim=2)
    x = np.random.default_rng(0).normal(size=(50, 2))
    lp, g = t.log_prob_grad(x)
    np.testing.assert_allclose(lp, -0.5 * (x**2).sum(1) - np.log1p(x[:, 0] ** 2))
    want = -x.copy()
    want[:, 0] -= 2 * x[:, 0] / (1 + x[:, 0] ** 2)
    np.testing.assert_allclose(g, want, rtol=1e-10)
