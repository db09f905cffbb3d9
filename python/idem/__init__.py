"""idem — learn to sample a Boltzmann density p(x) ∝ exp(−E(x)) from its energy alone.

Iterated Denoising Energy Matching (iDEM, Akhound-Sadegh et al., ICML 2024), implemented in Rust;
this package is a thin layer over the Rust library (numpy in, numpy out).

Quick start with your own energy::

    import numpy as np, idem

    def log_p(x):                       # x: float64 array [B, dim]
        return -0.5 * (x**2).sum(1), -x   # log p [B] and ∇log p [B, dim]

    target = idem.Target.from_function(log_p, dim=2, name="gauss")
    run = idem.train(target, out="runs/gauss")   # settings from a short probe of the target
    x = run.sample(10_000, seed=1)                # float32 array [10000, 2]

Built-in targets (``idem.Target("gmm40")``, ``"dw4"``, ``"lj13"``, ``"lj55"``) and presets
(``idem.presets()``) are those of the ``idem`` command line; runs written by either can be loaded
by the other (``idem.load``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _idem

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "Target",
    "Run",
    "train",
    "load",
    "resume",
    "evaluate",
    "mcmc",
    "exact",
    "presets",
    "GridReference",
    "torch_function",
    "set_threads",
]

ArrayLike = Union[np.ndarray, Sequence[Sequence[float]]]
EnergyFunction = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


def _rows(x: ArrayLike, dim: int, what: str = "x") -> np.ndarray:
    """`x` as a C-contiguous float64 array [N, dim] (accepts [dim], [N, dim], [N, n, d])."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if a.ndim == 1 and a.shape[0] == dim:
        a = a[None, :]
    elif a.ndim >= 3:
        a = a.reshape(a.shape[0], -1)
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {np.shape(x)}")
    return np.ascontiguousarray(a, dtype=np.float64)


class Target:
    """A Boltzmann target log p(x) = −E(x) with its gradient.

    ``Target("lj13")`` is a built-in target; ``Target.from_function(f, dim=…)`` wraps your own.
    """

    def __init__(self, name: str) -> None:
        """The built-in target ``name``: ``gmm40``, ``dw4``, ``lj13``, ``lj55`` or ``ljN``."""
        self._t = _idem._Target.builtin(name)

    @classmethod
    def _wrap(cls, t: "_idem._Target") -> "Target":
        obj = cls.__new__(cls)
        obj._t = t
        return obj

    @classmethod
    def from_function(
        cls,
        f: EnergyFunction,
        dim: Optional[int] = None,
        *,
        particles: Optional[Tuple[int, int]] = None,
        name: str = "custom",
        batch_size: Optional[int] = None,
        concurrent: bool = True,
    ) -> "Target":
        """A target from your own function.

        ``f(x)`` gets a float64 array ``[B, dim]`` and returns ``(log_p, grad)``: log p ``[B]`` and
        ∇log p ``[B, dim]`` as numpy float arrays (float64 preferred; float32 is accepted). log p
        may be unnormalised. idem calls ``f`` with whole blocks — the DEM target's B × K Monte-Carlo
        configurations in a few calls, up to ``batch_size`` rows each (default 2**20) — and counts
        every configuration as one energy call. With ``concurrent=True`` (the default) a batch is
        split into one call per worker thread, run at once: numpy releases the GIL inside each
        operation on a large array, so both cores work. Pass ``concurrent=False`` when ``f`` makes
        many small numpy operations (a loop over chunks: two threads then mostly wait for the GIL)
        or threads itself (PyTorch, JAX): calls then come one at a time, and idem draws and
        accumulates the DEM target's other samples while ``f`` runs. Rows whose log p or gradient is NaN or ±inf are
        invalid configurations (weight 0, as for built-in targets). An exception raised by ``f``
        stops whatever idem was doing and is re-raised with its traceback; a training run keeps
        its last checkpoint.

        For n-body systems invariant to rotation, translation and permutation pass
        ``particles=(n, spatial_dim)`` (``dim`` is then n·spatial_dim): idem uses the equivariant
        EGNN, a mean-free prior and noise, and the particle metrics. ``f`` receives flattened
        configurations ``[B, n·spatial_dim]``.

        ``name`` identifies the target in run directories (``idem.load`` checks it).
        """
        if particles is not None:
            n, d = (int(v) for v in particles)
            if dim is not None and dim != n * d:
                raise ValueError(f"dim={dim} does not match particles={particles} ({n * d} coordinates)")
            dim = n * d
            particles = (n, d)
        if dim is None or int(dim) <= 0:
            raise ValueError("from_function needs dim=… (or particles=(n, spatial_dim))")
        if not callable(f):
            raise TypeError("f must be callable: f(x[B, dim]) -> (log_p[B], grad[B, dim])")
        return cls._wrap(
            _idem._Target.from_function(f, int(dim), str(name), particles, batch_size, bool(concurrent))
        )

    @classmethod
    def from_torch(
        cls,
        log_prob: Callable[[Any], Any],
        dim: Optional[int] = None,
        *,
        particles: Optional[Tuple[int, int]] = None,
        name: str = "custom",
        batch_size: Optional[int] = None,
        device: Any = None,
        dtype: Any = None,
    ) -> "Target":
        """A target from a PyTorch function ``log_prob(x: Tensor[B, dim]) -> Tensor[B]``; the
        gradient comes from autograd (see :func:`torch_function`). Calls come one at a time
        (PyTorch threads inside each)."""
        f = torch_function(log_prob, device=device, dtype=dtype)
        return cls.from_function(
            f, dim, particles=particles, name=name, batch_size=batch_size, concurrent=False
        )

    @property
    def name(self) -> str:
        """The target's name (recorded in run directories)."""
        return self._t.name

    @property
    def dim(self) -> int:
        """Coordinates per configuration."""
        return self._t.dim

    @property
    def particles(self) -> Optional[Tuple[int, int]]:
        """(n_particles, spatial_dim) for particle systems, else None."""
        return self._t.particles

    @property
    def calls(self) -> int:
        """Configurations evaluated through this target so far (every log p counts one)."""
        return self._t.calls

    def log_prob(self, x: ArrayLike) -> np.ndarray:
        """log p at configurations ``x`` ([N, dim], or [N, n, d] for particles): float64 [N];
        invalid configurations (e.g. overlapping particles) give −inf."""
        return self._t.log_prob(_rows(x, self.dim))

    def grad(self, x: ArrayLike) -> np.ndarray:
        """∇log p at ``x``: float64 [N, dim] (0 for invalid configurations)."""
        return self._t.log_prob_grad(_rows(x, self.dim))[1]

    def log_prob_grad(self, x: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """(log p [N], ∇log p [N, dim]) at ``x``, float64."""
        return self._t.log_prob_grad(_rows(x, self.dim))

    def energy(self, x: ArrayLike) -> np.ndarray:
        """E = −log p at ``x`` (float64 [N])."""
        return -self.log_prob(x)

    def __repr__(self) -> str:
        return repr(self._t)


def torch_function(
    log_prob: Callable[[Any], Any], device: Any = None, dtype: Any = None
) -> EnergyFunction:
    """Turn a PyTorch log-density ``log_prob(x: Tensor[B, dim]) -> Tensor[B]`` into the numpy
    function :meth:`Target.from_function` expects, with ∇log p by autograd. The tensor is float64
    on ``device`` (CPU by default) unless ``dtype`` says otherwise. Needs ``torch``."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("idem.torch_function needs PyTorch: pip install torch") from e
    dt = dtype if dtype is not None else torch.float64

    def f(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        xt = torch.as_tensor(x, dtype=dt, device=device).requires_grad_(True)
        with torch.enable_grad():
            lp = log_prob(xt)
            if lp.shape != (x.shape[0],):
                raise ValueError(f"log_prob must return shape ({x.shape[0]},), got {tuple(lp.shape)}")
            (g,) = torch.autograd.grad(lp.sum(), xt)
        return (
            lp.detach().to("cpu", torch.float64).numpy(),
            g.detach().to("cpu", torch.float64).numpy(),
        )

    return f


def presets() -> Dict[str, str]:
    """The built-in training presets: name → one-line description."""
    return dict(_idem.presets())


def _sets(overrides: Optional[Mapping[str, Any]]) -> List[str]:
    out = []
    for k, v in (overrides or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = json.dumps(v)  # a TOML basic string
        out.append(f"{k}={v}")
    return out


def _target_of(target: Union[Target, str]) -> Target:
    return target if isinstance(target, Target) else Target(target)


class Run:
    """A run directory (written by ``idem.train`` or the ``idem train`` command): its
    configuration, metrics and trained sampler."""

    def __init__(self, path: Union[str, os.PathLike], target: Optional[Target] = None) -> None:
        """Open the run in ``path``. A run of a user's target needs that ``target`` to resume
        training (sampling works without it when no negative-time steps are configured)."""
        self.path = Path(path)
        if not (self.path / "config.toml").exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.toml)")
        self.target = target
        if target is not None and target.name.lower() != self.config["target"].lower():
            raise ValueError(
                f"the run was trained on {self.config['target']!r}, not on {target.name!r}"
            )
        self.report: Optional[str] = None

    @property
    def config(self) -> Dict[str, Any]:
        """The resolved configuration (``config.toml``) as a dict."""
        return tomllib.loads((self.path / "config.toml").read_text())

    @property
    def metrics(self) -> List[Dict[str, Any]]:
        """One dict per epoch (``metrics.jsonl``): loss, learning rate, wall time, energy calls,
        validation metrics (``val_*``)."""
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    @property
    def summary(self) -> Optional[Dict[str, Any]]:
        """The end-of-run summary (``summary.json``), if the run finished."""
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    @property
    def probe(self) -> Optional[Dict[str, Any]]:
        """What the automatic configuration's probe measured (``probe.json``), if it ran."""
        p = self.path / "probe.json"
        return json.loads(p.read_text()) if p.exists() else None

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        checkpoint: str = "last",
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> np.ndarray:
        """``n`` samples from the trained sampler (reverse SDE of the network), float32
        ``[n, dim]`` in the target's coordinates. ``checkpoint``: ``"last"`` (end of training) or
        ``"best"`` (best validation W2). ``overrides``: sampler settings such as
        ``{"final_sde_steps": 500}``, or ``{"refine_steps": 40}`` for that many MALA steps from
        each sample (the refinement option, p-invariant; its energy calls are ``n·(steps + 2)``),
        or ``{"reweight_proposals": 4000}`` for importance resampling from a CNF fitted on the
        samples (one energy call per proposal; applied before the refinement when both are set)."""
        files = {"last": "checkpoint.safetensors", "best": "best.safetensors"}
        if checkpoint not in files:
            raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
        t = self.target._t if self.target is not None else None
        if t is None and not _is_builtin(self.config["target"]):
            raise ValueError(
                f"the run was trained on the user target {self.config['target']!r}: open it with "
                "idem.load(path, target=…) to sample"
            )
        return _idem.sample(str(self.path), int(n), int(seed), files[checkpoint], _sets(overrides), t)

    def score(self, x: ArrayLike, t: float, *, checkpoint: str = "last") -> np.ndarray:
        """The trained network's score s_θ(x, t) ≈ ∇log (p ∗ N(0, h(t)I))(x) at configurations
        ``x`` (target coordinates) and time ``t`` ∈ [0, 1], float64 ``[N, dim]``."""
        files = {"last": "checkpoint.safetensors", "best": "best.safetensors"}
        t_ = self.target._t if self.target is not None else None
        dim = (self.target or Target(self.config["target"])).dim if t_ is not None or _is_builtin(self.config["target"]) else None
        if dim is None:
            raise ValueError("open a run of a user target with idem.load(path, target=…) to evaluate its score")
        return _idem.score(str(self.path), files[checkpoint], _rows(x, dim), float(t), t_)

    def resume(
        self, overrides: Optional[Mapping[str, Any]] = None, *, progress: bool = True
    ) -> "Run":
        """Continue training from the last checkpoint (e.g. ``overrides={"epochs": 200}``)."""
        t = self.target._t if self.target is not None else None
        self.report = _idem.resume(str(self.path), _sets(overrides), t, progress)
        return self

    def evaluate(self, reference: ArrayLike, n: Optional[int] = None, seed: int = 0, **kw: Any) -> Dict[str, float]:
        """Sample ``n`` points (default: as many as ``reference`` has) and :func:`evaluate` them."""
        target = self.target or Target(self.config["target"])
        ref = _rows(reference, target.dim, "reference")
        x = self.sample(n or ref.shape[0], seed)
        return evaluate(target, x, ref, **kw)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, target={self.config['target']!r})"


def _is_builtin(name: str) -> bool:
    try:
        _idem._Target.builtin(name)
        return True
    except ValueError:
        return False


def train(
    target: Union[Target, str],
    preset: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    out: Optional[Union[str, os.PathLike]] = None,
    seed: int = 0,
    *,
    scale: Optional[float] = None,
    validation: Optional[ArrayLike] = None,
    progress: bool = True,
) -> Run:
    """Train iDEM on ``target`` and return the finished :class:`Run`.

    * ``preset``: a built-in preset (``idem.presets()``). Without one, the settings come from the
      target itself: a short tempered-MCMC probe (about 0.8 M energy calls) measures its length
      scale, well width and force size, which set the network's coordinates, the noise schedule's
      σ_max, the blended DEM target's σ_b and the clipping norms; the network follows the
      target's kind (MLP for vectors, EGNN for particle systems). ``scale`` is a hint of the
      target's length scale — how far from the origin its mass lies — used as σ_max and as the
      probe's starting spread; give it when the mass is far from the unit ball. The probe's
      figures are saved as ``probe.json`` in the run.
    * ``overrides``: settings over the preset or automatic ones, e.g. ``{"epochs": 200,
      "sde.steps": 100}`` (names as in ``config.toml``).
    * ``out``: the run directory (default ``runs/<preset or target>-seed<seed>``).
    * ``validation``: model-selection samples ``[N, dim]`` (e.g. MCMC); saved in the run as
      ``validation.npy``. Built-in targets find theirs as the command line does.
    * ``progress``: show a progress bar (stderr).
    """
    target = _target_of(target)
    if preset is None:
        cfg_toml, probe = _idem.auto_config(target._t, int(seed), scale)
    else:
        if scale is not None:
            raise ValueError("scale= is a hint for the automatic configuration; a preset sets its own scales")
        cfg_toml, probe = _idem.preset_toml(preset), None
    sets = _sets({"seed": int(seed), "target": target.name})
    sets += _sets(overrides)
    out = Path(out) if out is not None else Path("runs") / f"{preset or target.name}-seed{seed}"
    if validation is not None:
        out.mkdir(parents=True, exist_ok=True)
        v = _rows(validation, target.dim, "validation").astype(np.float32)
        vpath = out / "validation.npy"
        np.save(vpath, v)
        sets += _sets({"validation": str(vpath.resolve())})
    cfg_toml = _idem.with_overrides(cfg_toml, sets)
    if probe is not None:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "config.toml").exists():
            raise FileExistsError(f"{out} already holds a run; use idem.resume or choose another out=")
        (out / "probe.json").write_text(probe)
    run = Run.__new__(Run)
    run.path, run.target = out, target
    run.report = _idem.train(target._t, cfg_toml, str(out), progress)
    return run


def load(path: Union[str, os.PathLike], target: Optional[Union[Target, str]] = None) -> Run:
    """Open a run directory written by ``idem.train`` or the ``idem train`` command. Runs of a
    user's target need that ``target`` (the same name) to sample or resume."""
    return Run(path, _target_of(target) if target is not None else None)


def resume(
    path: Union[str, os.PathLike],
    target: Optional[Union[Target, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    *,
    progress: bool = True,
) -> Run:
    """Continue the run in ``path`` from its last checkpoint (``overrides`` e.g. more epochs)."""
    return load(path, target).resume(overrides, progress=progress)


def evaluate(
    target: Union[Target, str],
    samples: ArrayLike,
    reference: ArrayLike,
    *,
    aligned: bool = True,
    w2_chunk: Optional[int] = None,
    protocol: Optional[str] = None,
    protocol_rows: int = 2000,
    protocol_seed: int = 0,
) -> Dict[str, float]:
    """The metrics of ``idem eval`` (documented in the Rust module ``idem::eval``): raw W2
    (``w2``), energy W2/W1, TV (2-D histogram for 2-D targets; interatomic distances for
    particle systems, ``dist_tv``), aligned W2 for particle systems (``aligned``), with
    ``w2_chunk=N`` the W2 averaged over all pairs of N-row chunks, and with
    ``protocol="adjoint-sampling"`` the ``as_*`` figures of the AS/ASBS papers' protocol
    (``protocol_rows`` vs as many reference rows drawn without replacement; Rust module
    ``idem::eval::geometric``)."""
    target = _target_of(target)
    s = _rows(samples, target.dim, "samples")
    r = _rows(reference, target.dim, "reference")
    if protocol not in (None, "adjoint-sampling"):
        raise ValueError(f"unknown protocol {protocol!r}; the one available is 'adjoint-sampling'")
    rows = protocol_rows if protocol is not None else None
    return dict(_idem.evaluate(target._t, s, r, aligned, w2_chunk, rows, protocol_seed))


def mcmc(
    target: Union[Target, str],
    *,
    chains: int = 100,
    warmup: int = 1000,
    steps: int = 1000,
    thin: int = 1,
    kernel: str = "mala",
    leapfrog: int = 10,
    temperatures: int = 1,
    t_max: float = 10.0,
    init: Optional[ArrayLike] = None,
    init_std: float = 1.0,
    step_size: float = 1e-3,
    relax: int = 0,
    seed: int = 0,
    budget: Optional[int] = None,
    target_accept: Optional[float] = None,
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Reference MCMC (``idem mcmc``): MALA or HMC chains with step sizes adapted during warm-up,
    optional parallel tempering (``temperatures`` replicas up to ``t_max``). Chains start from
    the rows of ``init`` or N(0, init_std²). Returns (samples float64 [draws·chains, dim],
    draw-major; info: energy calls, acceptance, step sizes, R̂ and ESS)."""
    target = _target_of(target)
    rows = _rows(init, target.dim, "init") if init is not None else None
    x, info = _idem.mcmc(
        target._t, chains, warmup, steps, thin, kernel, leapfrog, temperatures, t_max,
        init_std, rows, step_size, relax, seed, budget, target_accept,
    )
    return x, dict(info)


def exact(target: str, n: int, seed: int) -> np.ndarray:
    """``n`` exact samples of a built-in target with an exact sampler (``gmm40``), float32."""
    return _idem.exact(target, int(n), int(seed))


class GridReference:
    """The exact density of a 2-D target by quadrature on a grid of cells over a box: exact
    bin masses, exact samples, basins of attraction and their weights. For checking a sampler of
    a low-dimensional energy without any reference samples (Rust: ``idem::eval::grid``)."""

    def __init__(
        self,
        target: Union[Target, str],
        lo: Tuple[float, float],
        hi: Tuple[float, float],
        cells: int = 1000,
    ) -> None:
        """Evaluate log p at the centres of ``cells × cells`` cells of [lo₀, hi₀] × [lo₁, hi₁]."""
        self.target = _target_of(target)
        self._g = _idem._GridReference(self.target._t, tuple(map(float, lo)), tuple(map(float, hi)), int(cells))

    @property
    def basins(self) -> List[Dict[str, Any]]:
        """Basins of attraction of log p (steepest ascent on the grid), heaviest first: mode,
        log p at the mode, exact weight."""
        return [{"mode": m, "log_p": lp, "weight": w} for m, lp, w in self._g.basins()]

    @property
    def edge_mass(self) -> float:
        """Mass in the outermost ring of cells (large: the box is too small)."""
        return self._g.edge_mass

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` exact samples of the grid density (float32 [n, 2])."""
        return self._g.sample(int(n), int(seed))

    def bin_masses(self, bins: int) -> np.ndarray:
        """Exact masses of ``bins × bins`` histogram bins over the box (bins must divide cells)."""
        return self._g.bin_masses(int(bins))

    def histogram_tv(self, samples: ArrayLike, bins: int = 40) -> float:
        """TV between the samples' histogram and the exact bin masses (outside samples count)."""
        return self._g.histogram_tv(_rows(samples, 2, "samples"), int(bins))

    def compare(self, samples: ArrayLike, bins: int = 40, floor_sets: int = 5, seed: int = 0) -> Dict[str, Any]:
        """Histogram TV of ``samples`` beside the floor of exact sample sets of the same size
        (``tv_floor``, ``tv_excess``), and each basin's exact weight beside the samples'
        fraction (``basins``, ``max_basin_error``)."""
        return json.loads(self._g.compare(_rows(samples, 2, "samples"), int(bins), int(floor_sets), int(seed)))


def set_threads(n: int) -> None:
    """Use ``n`` worker threads in this process (before any other idem call; default: all
    cores or ``RAYON_NUM_THREADS``)."""
    _idem.set_threads(int(n))
