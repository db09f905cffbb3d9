"""Time the published reference's DEM score target (`estimate_grad_Rt` of jarridrb/DEM) on this
machine, in the shapes of `idem bench target`, and write a file for `idem bench target --reference`.

The reference is not vendored: pass checkouts of the DEM repository and the two forks it pins
(`atong01/bgflow` for the DW and LJ potentials, `jarridrb/fab-torch` for the GMM). Nothing on the
computed path is changed; only modules that plot or log (matplotlib, PIL, hydra, lightning, wandb)
are replaced by empty stand-ins, and the forks' package `__init__`s (which import their training
code) are bypassed by importing the needed submodules directly. Needs torch and numpy.

    python python/benchmarks/reference_dem_target.py --dem DEM --bgflow BGFLOW --fab FAB \\
        --tasks gmm40,dw4 --repeats 10 --out ref.json [--carry earlier.json]

`--carry` copies the tasks not timed here (e.g. the LJ ones, minutes per repeat) from an earlier
file of the same format, keeping their own dates; `idem bench target --reference` needs all four.
Points are of the kind `idem::bench::bench_points` uses: GMM-40 samples of the mixture (in the
reference's normalised coordinates, the noise schedule of its config), particles a jittered lattice,
mean-free; t uniform on [0, 1]. Medians of `--repeats` after one warm-up, torch float32 with
`--threads` intra-op threads.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import types


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def namespace(name, path):
    """`name` as a package rooted at `path` without running its `__init__.py`."""
    m = types.ModuleType(name)
    m.__path__ = [path]
    sys.modules[name] = m
    return m


class _Anything:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


def _module_attr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything()


def load_reference(dem, bgflow, fab):
    for name in [
        "matplotlib",
        "matplotlib.pyplot",
        "PIL",
        "PIL.Image",
        "wandb",
        "lightning",
        "lightning.pytorch",
        "pytorch_lightning",
        "hydra",
    ]:
        stub(name, __getattr__=_module_attr)
    stub("hydra.utils", get_original_cwd=os.getcwd)
    stub("lightning.pytorch.loggers", WandbLogger=_Anything)
    stub("pytorch_lightning.loggers", WandbLogger=_Anything)
    sys.path.insert(0, dem)
    namespace("dem.utils", os.path.join(dem, "dem", "utils"))
    stub("dem.utils.logging_utils", fig_to_image=_Anything())
    # bgflow: its package __init__ imports every flow; the potentials need only these modules
    bg = namespace("bgflow", os.path.join(bgflow, "bgflow"))
    utils = namespace("bgflow.utils", os.path.join(bgflow, "bgflow", "utils"))
    import bgflow.utils.geometry as geometry

    for name in ["compute_distances", "distance_vectors", "distances_from_vectors", "remove_mean"]:
        setattr(utils, name, getattr(geometry, name))
    namespace("bgflow.distribution", os.path.join(bgflow, "bgflow", "distribution"))
    namespace("bgflow.distribution.energy", os.path.join(bgflow, "bgflow", "distribution", "energy"))
    from bgflow.distribution.energy.base import Energy
    from bgflow.distribution.energy.multi_double_well_potential import MultiDoubleWellPotential

    # what DEM's energy modules import from the package (its LJ potential is DEM's own)
    bg.MultiDoubleWellPotential = MultiDoubleWellPotential
    bg.Energy = Energy
    # fab: the GMM only
    namespace("fab", os.path.join(fab, "fab"))
    namespace("fab.utils", os.path.join(fab, "fab", "utils"))
    stub("fab.utils.plotting", plot_contours=_Anything(), plot_marginal_pair=_Anything())

    from dem.models.components.score_estimator import estimate_grad_Rt
    from dem.models.components.noise_schedules import GeometricNoiseSchedule

    return estimate_grad_Rt, GeometricNoiseSchedule


# the shapes and schedules of `idem::bench::target_cases` (GMM in the reference's coordinates)
CASES = {
    "gmm40": dict(B=512, K=500, sigma=(1e-5, 1.0)),
    "dw4": dict(B=512, K=1000, sigma=(1e-5, 3.0)),
    "lj13": dict(B=512, K=1000, sigma=(0.01, 2.0)),
    "lj55": dict(B=128, K=1000, sigma=(0.5, 4.0)),
}


def placeholder_data(dim):
    """The particle energies' constructors load a test split; they get two rows of zeros (the
    timing never uses them)."""
    import tempfile

    import numpy as np

    path = os.path.join(tempfile.mkdtemp(), f"zeros{dim}.npy")
    np.save(path, np.zeros((2, dim), dtype=np.float32))
    return path


def make_energy(task):
    if task == "gmm40":
        from dem.energies.gmm_energy import GMM

        return GMM(dimensionality=2, n_mixes=40, loc_scaling=40, log_var_scaling=1.0,
                   should_unnormalize=True, data_normalization_factor=50,
                   true_expectation_estimation_n_samples=1000)
    if task == "dw4":
        from dem.energies.multi_double_well_energy import MultiDoubleWellEnergy

        data = placeholder_data(8)
        return MultiDoubleWellEnergy(dimensionality=8, n_particles=4, data_path=data,
                                     data_path_train=data, data_path_val=data)
    from dem.energies.lennardjones_energy import LennardJonesEnergy

    n = int(task[2:])
    data = placeholder_data(3 * n)
    return LennardJonesEnergy(dimensionality=3 * n, n_particles=n, data_path=data,
                              data_path_train=data, data_path_val=data, data_path_test=data)


def make_points(torch, task, energy, b, gen):
    if task == "gmm40":
        x = energy.gmm.sample((b,))
        return energy.normalize(x)
    n, d = {"dw4": (4, 2), "lj13": (13, 3), "lj55": (55, 3)}[task]
    side = math.ceil(n ** (1.0 / d))
    spacing = 4.0 if d == 2 else 1.1
    lattice = []
    for i in range(n):
        idx, p = i, []
        for _ in range(d):
            p.append((idx % side) * spacing)
            idx //= side
        lattice.append(p)
    x = torch.tensor(lattice, dtype=torch.float32).reshape(1, n * d).repeat(b, 1)
    x = x + 0.05 * torch.randn(x.shape, generator=gen)
    x = x.reshape(b, n, d)
    x = x - x.mean(dim=1, keepdim=True)
    return x.reshape(b, n * d)


def cpu_model():
    """'model name (family F model M), N CPUs' from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model "
                f"{info.get('model', '?')}), {os.cpu_count()} CPUs")
    except OSError:
        return platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dem", required=True)
    ap.add_argument("--bgflow", required=True)
    ap.add_argument("--fab", required=True)
    ap.add_argument("--tasks", default="gmm40,dw4")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=0, help="points per call (0: all B at once)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--carry", help="earlier file whose other tasks are copied")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    estimate_grad_Rt, GeometricNoiseSchedule = load_reference(a.dem, a.bgflow, a.fab)
    result = {}
    for task in a.tasks.split(","):
        c = CASES[task]
        gen = torch.Generator().manual_seed(0)
        energy = make_energy(task)
        x = make_points(torch, task, energy, c["B"], gen)
        t = torch.rand(c["B"], generator=gen)
        sched = GeometricNoiseSchedule(*c["sigma"])
        chunk = a.chunk or c["B"]

        def once():
            for s in range(0, c["B"], chunk):
                estimate_grad_Rt(t[s:s + chunk], x[s:s + chunk], energy, sched, c["K"])

        once()  # warm-up
        times = []
        for _ in range(a.repeats):
            start = time.perf_counter()
            once()
            times.append((time.perf_counter() - start) * 1e3)
        ms = statistics.median(times)
        result[task] = dict(B=c["B"], K=c["K"], chunk=chunk, ms=round(ms, 1), min_ms=round(min(times), 1),
                            max_ms=round(max(times), 1), repeats=a.repeats,
                            sigma=f"geometric {c['sigma'][0]}..{c['sigma'][1]}",
                            measured=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        print(f"{task}: median {ms:.1f} ms (min {min(times):.1f}, max {max(times):.1f}) over {a.repeats}",
              flush=True)
    if a.carry:
        with open(a.carry) as f:
            earlier = json.load(f)
        for task, v in earlier["reference_ms"].items():
            if task not in result:
                result[task] = dict(v, carried_from=a.carry,
                                    measured=v.get("measured", earlier.get("measured")))
    out = dict(
        what="DEM score target: estimate_grad_Rt of the published reference "
             f"(torch {torch.__version__}, {a.threads} threads, float32); median of repeats after one warm-up",
        measured=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=cpu_model(),
        reference_ms=result,
    )
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
