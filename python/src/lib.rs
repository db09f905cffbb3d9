//! `idem._idem`: the extension module under the `idem` Python package (`python/idem/`).
//!
//! A thin layer over the Rust library: every computation is the library's. This module takes
//! clean inputs (C-contiguous float64 arrays, checked shapes; the Python layer prepares them)
//! and releases the GIL for all Rust work; a user's Python energy re-acquires it for each
//! whole-batch call ([`PyEnergy`]). An exception raised by that function stops the Rust caller
//! and is re-raised here, traceback intact, with a note saying what stopped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use idem::config::TrainConfig;
use idem::energy::BatchEnergy;
use idem::eval::grid::GridReference;
use idem::model::ScoreModel;
use idem::train::Trainer;
use idem::{Error, ParticleShape, Target};
use numpy::ndarray::{Array1, Array2};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFloatingPointError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// A user's Python function as a whole-batch energy: `f(x[N, dim] float64) -> (log_p[N],
/// grad[N, dim])`, called with the GIL held, once per block of configurations.
struct PyEnergy {
    func: Py<PyAny>,
    name: String,
    dim: usize,
    particles: Option<ParticleShape>,
    max_rows: usize,
    concurrent: bool,
    /// The first exception raised by `func` (or made from a bad return) since the last take.
    error: Mutex<Option<PyErr>>,
}

impl PyEnergy {
    fn fail(&self, err: PyErr, what: &str) -> Error {
        let msg = what.to_string();
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
        Error::External(msg)
    }

    fn take_error(&self) -> Option<PyErr> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn call(&self, x: &[f64], lp: &mut [f64], grad: Option<&mut [f64]>) -> idem::Result<()> {
        let n = lp.len();
        let dim = self.dim;
        Python::attach(|py| {
            // Ctrl-C during a long run: a KeyboardInterrupt stops it like any exception
            if let Err(e) = py.check_signals() {
                return Err(self.fail(e, "interrupted"));
            }
            let xa = Array2::from_shape_vec((n, dim), x.to_vec())
                .expect("rows × dim values")
                .into_pyarray(py);
            let out = match self.func.call1(py, (xa,)) {
                Ok(o) => o,
                Err(e) => return Err(self.fail(e, &format!("{} raised an exception", self.name))),
            };
            let expected = format!(
                "the energy function {} must return (log_p, grad): numpy float arrays of shapes \
                 ({n},) and ({n}, {dim}) for an input of shape ({n}, {dim})",
                self.name
            );
            let bad = |detail: String| -> Error {
                self.fail(
                    PyValueError::new_err(format!("{expected}; {detail}")),
                    "bad return value",
                )
            };
            let out = out.bind(py);
            let Ok(tuple) = out.cast::<PyTuple>() else {
                return Err(bad(format!(
                    "got a {}",
                    out.get_type()
                        .name()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                )));
            };
            if tuple.len() != 2 {
                return Err(bad(format!("got a tuple of {} items", tuple.len())));
            }
            let lp_obj = tuple.get_item(0).expect("two items");
            let g_obj = tuple.get_item(1).expect("two items");
            read_f64(&lp_obj, &[n], lp).map_err(|d| bad(format!("log_p: {d}")))?;
            if let Some(g) = grad {
                read_f64(&g_obj, &[n, dim], g).map_err(|d| bad(format!("grad: {d}")))?;
            }
            Ok(())
        })
    }
}

/// Copy a float64 / float32 numpy array of exactly `shape` into `out`; else a description of
/// what it is.
fn read_f64(obj: &Bound<'_, PyAny>, shape: &[usize], out: &mut [f64]) -> Result<(), String> {
    let describe = |o: &Bound<'_, PyAny>| -> String {
        o.get_type()
            .name()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "object".into())
    };
    if let Some(r) = copy_as_f64::<f64>(obj, shape, out) {
        return r;
    }
    if let Some(r) = copy_as_f64::<f32>(obj, shape, out) {
        return r;
    }
    if let Ok(a) = obj.cast::<numpy::PyUntypedArray>() {
        let dt = a.dtype().str().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!(
            "got a numpy array of dtype {dt} and shape {:?}",
            a.shape()
        ));
    }
    Err(format!("got a {}", describe(obj)))
}

/// If `obj` is a numpy array of element type `T`: copy it into `out` when its shape is `shape`
/// (else describe the shape); `None` for any other object.
fn copy_as_f64<T: numpy::Element + Copy + Into<f64>>(
    obj: &Bound<'_, PyAny>,
    shape: &[usize],
    out: &mut [f64],
) -> Option<Result<(), String>> {
    let a = obj.cast::<numpy::PyArrayDyn<T>>().ok()?;
    if a.shape() != shape {
        return Some(Err(format!("got shape {:?}", a.shape())));
    }
    let r = a.readonly();
    for (o, v) in out.iter_mut().zip(r.as_array().iter()) {
        *o = (*v).into();
    }
    Some(Ok(()))
}

impl BatchEnergy for PyEnergy {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn particles(&self) -> Option<ParticleShape> {
        self.particles
    }
    fn max_rows(&self) -> usize {
        self.max_rows
    }
    fn concurrent_calls(&self) -> bool {
        self.concurrent
    }
    fn log_prob_grad_rows(&self, x: &[f64], lp: &mut [f64], grad: &mut [f64]) -> idem::Result<()> {
        self.call(x, lp, Some(grad))
    }
    fn log_prob_rows(&self, x: &[f64], lp: &mut [f64]) -> idem::Result<()> {
        self.call(x, lp, None)
    }
}

/// (log p [N], ∇log p [N, dim]) as numpy arrays.
type LogProbGrad<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<f64>>);

/// A target: built-in by name, or a user's Python function.
#[pyclass(name = "_Target", module = "idem._idem", frozen)]
struct PyTarget {
    target: Target,
    py_energy: Option<Arc<PyEnergy>>,
}

/// Convert a library error into a Python exception; an error of the user's energy becomes the
/// exception it raised, with `note` added.
fn to_py(py: Python<'_>, target: Option<&PyTarget>, err: Error, note: &str) -> PyErr {
    if let Some(e) = target
        .and_then(|t| t.py_energy.as_ref())
        .and_then(|e| e.take_error())
    {
        if !note.is_empty() {
            let _ = e.value(py).call_method1("add_note", (note,));
        }
        return e;
    }
    let msg = if note.is_empty() {
        err.to_string()
    } else {
        format!("{err} ({note})")
    };
    match err {
        Error::UnknownTarget { .. } | Error::Config(_) | Error::Shape(_) => {
            PyValueError::new_err(msg)
        }
        Error::NonFinite(_) | Error::Diverged(_) => PyFloatingPointError::new_err(msg),
        Error::Io { .. } | Error::Npy { .. } => PyOSError::new_err(msg),
        Error::External(_) | Error::Tensor(_) => PyRuntimeError::new_err(msg),
    }
}

fn rows_of(x: &PyReadonlyArray2<'_, f64>, dim: usize) -> PyResult<Vec<f64>> {
    let s = x.shape();
    if s[1] != dim {
        return Err(PyValueError::new_err(format!(
            "expected configurations of shape (N, {dim}), got {:?}",
            s
        )));
    }
    Ok(x.as_array().iter().copied().collect())
}

#[pymethods]
impl PyTarget {
    /// A built-in target: gmm40, dw4, lj13, lj55 or ljN.
    #[staticmethod]
    fn builtin(name: &str) -> PyResult<Self> {
        Ok(Self {
            target: Target::by_name(name).map_err(|e| PyValueError::new_err(e.to_string()))?,
            py_energy: None,
        })
    }

    /// A target from a Python function (see the `idem.Target.from_function` docs).
    #[staticmethod]
    #[pyo3(signature = (func, dim, name, particles=None, max_rows=None, concurrent=true))]
    fn from_function(
        func: Py<PyAny>,
        dim: usize,
        name: String,
        particles: Option<(usize, usize)>,
        max_rows: Option<usize>,
        concurrent: bool,
    ) -> PyResult<Self> {
        let energy = Arc::new(PyEnergy {
            func,
            name,
            dim,
            particles: particles.map(|(n, d)| ParticleShape {
                n_particles: n,
                spatial_dim: d,
            }),
            max_rows: max_rows.unwrap_or(1 << 20),
            concurrent,
            error: Mutex::new(None),
        });
        let target = Target::from_batch(energy.clone() as Arc<dyn BatchEnergy>)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self {
            target,
            py_energy: Some(energy),
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.target.name()
    }
    #[getter]
    fn dim(&self) -> usize {
        self.target.dim()
    }
    #[getter]
    fn particles(&self) -> Option<(usize, usize)> {
        self.target
            .particles()
            .map(|p| (p.n_particles, p.spatial_dim))
    }
    #[getter]
    fn calls(&self) -> u64 {
        self.target.calls()
    }
    #[getter]
    fn is_builtin(&self) -> bool {
        self.py_energy.is_none()
    }

    fn log_prob<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let xs = rows_of(&x, self.target.dim())?;
        let mut lp = vec![0.0; x.shape()[0]];
        py.detach(|| self.target.log_prob_batch_f64(&xs, &mut lp))
            .map_err(|e| to_py(py, Some(self), e, "in log_prob"))?;
        Ok(Array1::from_vec(lp).into_pyarray(py))
    }

    fn log_prob_grad<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<LogProbGrad<'py>> {
        let dim = self.target.dim();
        let xs = rows_of(&x, dim)?;
        let n = x.shape()[0];
        let (mut lp, mut g) = (vec![0.0; n], vec![0.0; n * dim]);
        py.detach(|| self.target.log_prob_grad_batch_f64(&xs, &mut lp, &mut g))
            .map_err(|e| to_py(py, Some(self), e, "in log_prob_grad"))?;
        Ok((
            Array1::from_vec(lp).into_pyarray(py),
            Array2::from_shape_vec((n, dim), g)
                .expect("n × dim")
                .into_pyarray(py),
        ))
    }

    /// Median milliseconds of the DEM score target at (batch, K) over `repeats` runs, with the
    /// batch drawn around `x` rows at times spread over [0, 1].
    #[pyo3(signature = (x, num_mc_samples, sigma_max, repeats=5))]
    fn bench_dem_target(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        num_mc_samples: usize,
        sigma_max: f64,
        repeats: usize,
    ) -> PyResult<Vec<f64>> {
        let dim = self.target.dim();
        let xs: Vec<f32> = rows_of(&x, dim)?.iter().map(|&v| v as f32).collect();
        let b = xs.len() / dim;
        let t: Vec<f32> = (0..b).map(|i| (i as f32 + 0.5) / b as f32).collect();
        let res = py.detach(|| -> idem::Result<Vec<f64>> {
            let sched = idem::NoiseSchedule::geometric(1e-5 * sigma_max, sigma_max)?;
            let dem = idem::DemTarget::new(sched, num_mc_samples, None)?;
            let mut out = vec![0.0f32; xs.len()];
            let mut ms = Vec::new();
            for r in 0..repeats.max(1) + 1 {
                let start = std::time::Instant::now();
                dem.estimate(&self.target, &xs, &t, r as u64, &mut out)?;
                if r > 0 {
                    ms.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            Ok(ms)
        });
        res.map_err(|e| to_py(py, Some(self), e, "in the DEM target benchmark"))
    }

    fn __repr__(&self) -> String {
        match self.particles() {
            Some((n, d)) => format!("Target({:?}, {n} particles × {d}-D)", self.name()),
            None => format!("Target({:?}, dim={})", self.name(), self.dim()),
        }
    }
}

/// The configuration of a built-in preset, as TOML.
#[pyfunction]
fn preset_toml(name: &str) -> PyResult<String> {
    TrainConfig::preset(name)
        .map(|c| c.to_toml())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The names and one-line descriptions of the built-in presets.
#[pyfunction]
fn presets() -> Vec<(String, String)> {
    idem::config::PRESETS
        .iter()
        .map(|(n, t)| {
            let about = t
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches('#')
                .trim();
            (n.to_string(), about.to_string())
        })
        .collect()
}

/// A TOML configuration with `key=value` overrides applied and validated.
#[pyfunction]
fn with_overrides(toml: &str, sets: Vec<String>) -> PyResult<String> {
    TrainConfig::from_toml(toml)
        .and_then(|c| c.with_overrides(&sets))
        .map(|c| c.to_toml())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Probe a target and configure a run for it: (TOML, probe as JSON).
#[pyfunction]
#[pyo3(signature = (target, seed, scale=None))]
fn auto_config(
    py: Python<'_>,
    target: &PyTarget,
    seed: u64,
    scale: Option<f64>,
) -> PyResult<(String, String)> {
    let t = &target.target;
    let (cfg, probe) = py
        .detach(|| idem::auto_config::auto_config(t, scale, seed))
        .map_err(|e| {
            to_py(
                py,
                Some(target),
                e,
                "in the automatic configuration's probe",
            )
        })?;
    Ok((
        cfg.to_toml(),
        serde_json::to_string(&probe).expect("a probe serialises"),
    ))
}

fn train_loop(
    py: Python<'_>,
    target: &PyTarget,
    mut trainer: Trainer,
    progress: bool,
) -> PyResult<String> {
    let res = py.detach(|| -> idem::Result<String> {
        trainer.run_to_end(!progress, |_| {
            // honour Ctrl-C between epochs too (energy calls check it as well)
            Python::attach(|py| py.check_signals())
                .map_err(|e| Error::External(format!("interrupted: {e}")))
        })?;
        idem::report::finish_run(&trainer, !progress)
    });
    // the run's evaluations count on the user's target too
    target.target.add_calls(trainer.model.target.calls());
    let dir = trainer.dir().display().to_string();
    res.map_err(|e| {
        let note = format!(
            "idem: training stopped at epoch {}; the last checkpoint in {dir} is intact \
             (continue with idem.resume)",
            trainer.epoch + 1
        );
        to_py(py, Some(target), e, &note)
    })
}

/// Train a new run of `target` with the configuration `toml` into `out`; returns the report.
#[pyfunction]
#[pyo3(signature = (target, toml, out, progress=true))]
fn train(
    py: Python<'_>,
    target: &PyTarget,
    toml: &str,
    out: PathBuf,
    progress: bool,
) -> PyResult<String> {
    let cfg = TrainConfig::from_toml(toml).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let t = target.target.clone();
    let trainer = py
        .detach(|| Trainer::create_with(&cfg, t, &out, &candle_core::Device::Cpu))
        .map_err(|e| to_py(py, Some(target), e, "while starting the run"))?;
    train_loop(py, target, trainer, progress)
}

/// Continue the run in `dir` (with `sets` applied to its configuration).
#[pyfunction]
#[pyo3(signature = (dir, sets, target=None, progress=true))]
fn resume(
    py: Python<'_>,
    dir: PathBuf,
    sets: Vec<String>,
    target: Option<&PyTarget>,
    progress: bool,
) -> PyResult<String> {
    let owned;
    let target = match target {
        Some(t) => t,
        None => {
            let cfg = idem::model::read_run_config(&dir).map_err(|e| to_py(py, None, e, ""))?;
            owned = PyTarget::builtin(&cfg.target).map_err(|_| {
                PyValueError::new_err(format!(
                    "the run in {} was trained on `{}`, not a built-in target: pass target=",
                    dir.display(),
                    cfg.target
                ))
            })?;
            &owned
        }
    };
    let t = target.target.clone();
    let trainer = py
        .detach(|| Trainer::resume_with(&dir, &sets, Some(t), &candle_core::Device::Cpu))
        .map_err(|e| to_py(py, Some(target), e, "while resuming the run"))?;
    train_loop(py, target, trainer, progress)
}

/// `n` samples of the run in `dir` from checkpoint `file`, with sampler overrides `sets`.
#[pyfunction]
#[pyo3(signature = (dir, n, seed, file, sets, target=None))]
fn sample<'py>(
    py: Python<'py>,
    dir: PathBuf,
    n: usize,
    seed: u64,
    file: &str,
    sets: Vec<String>,
    target: Option<&PyTarget>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let t = target.map(|t| t.target.clone());
    let res = py.detach(|| -> idem::Result<(Vec<f32>, usize)> {
        let mut model = ScoreModel::load_with(&dir, file, t, &candle_core::Device::Cpu)?;
        model.cfg = model.cfg.with_overrides(&sets)?;
        let (x, _) = model.sample(n, seed)?;
        Ok((x, model.target.dim()))
    });
    let (x, dim) = res.map_err(|e| to_py(py, target, e, "while sampling"))?;
    Ok(Array2::from_shape_vec((n, dim), x)
        .expect("n × dim")
        .into_pyarray(py))
}

/// The trained network's score s_θ(x, t) at configurations `x` (target coordinates) and time
/// `t` ∈ [0, 1], in target coordinates: the estimate of ∇log (p ∗ N(0, h(t)I))(x).
#[pyfunction]
#[pyo3(signature = (dir, file, x, t, target=None))]
fn score<'py>(
    py: Python<'py>,
    dir: PathBuf,
    file: &str,
    x: PyReadonlyArray2<'py, f64>,
    t: f64,
    target: Option<&PyTarget>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    if !(0.0..=1.0).contains(&t) {
        return Err(PyValueError::new_err(format!(
            "t must be in [0, 1], got {t}"
        )));
    }
    let tt = target.map(|t| t.target.clone());
    let xs = x.as_array().iter().copied().collect::<Vec<f64>>();
    let n = x.shape()[0];
    let res = py.detach(|| -> idem::Result<(Vec<f64>, usize)> {
        let model = ScoreModel::load_with(&dir, file, tt, &candle_core::Device::Cpu)?;
        let dim = model.target.dim();
        if xs.len() != n * dim {
            return Err(Error::Shape(format!(
                "expected configurations of shape (N, {dim})"
            )));
        }
        let s = model.scale();
        let xn: Vec<f32> = xs.iter().map(|v| (v / s) as f32).collect();
        let out = model.score(&xn, t as f32)?;
        Ok((out.iter().map(|&v| f64::from(v) / s).collect(), dim))
    });
    let (out, dim) = res.map_err(|e| to_py(py, target, e, "while evaluating the score"))?;
    Ok(Array2::from_shape_vec((n, dim), out)
        .expect("n × dim")
        .into_pyarray(py))
}

fn f32_rows(x: &PyReadonlyArray2<'_, f64>, dim: usize) -> PyResult<Vec<f32>> {
    Ok(rows_of(x, dim)?.into_iter().map(|v| v as f32).collect())
}

/// The metrics of `idem eval` as a dict.
#[pyfunction]
#[pyo3(signature = (target, samples, reference, aligned=true, w2_chunk=None, protocol_rows=None, protocol_seed=0))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    target: &PyTarget,
    samples: PyReadonlyArray2<'py, f64>,
    reference: PyReadonlyArray2<'py, f64>,
    aligned: bool,
    w2_chunk: Option<usize>,
    protocol_rows: Option<usize>,
    protocol_seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let dim = target.target.dim();
    let (s, r) = (f32_rows(&samples, dim)?, f32_rows(&reference, dim)?);
    let t = &target.target;
    let m = py
        .detach(|| -> idem::Result<_> {
            let mut m = idem::eval::evaluate_with(t, &s, &r, aligned)?;
            if let Some(size) = w2_chunk {
                m.extend(idem::eval::chunked_w2(t, &s, &r, size)?);
            }
            if let Some(rows) = protocol_rows {
                m.extend(idem::eval::geometric::adjoint_sampling_protocol(
                    t,
                    &s,
                    &r,
                    rows,
                    protocol_seed,
                )?);
            }
            Ok(m)
        })
        .map_err(|e| to_py(py, Some(target), e, "in evaluate"))?;
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// Exact samples of a built-in target that has an exact sampler (gmm40).
#[pyfunction]
fn exact<'py>(
    py: Python<'py>,
    target: &str,
    n: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let Some(g) = idem::train::exact_sampler(target) else {
        return Err(PyValueError::new_err(format!(
            "target `{target}` has no exact sampler (gmm40 has; for a 2-D target use idem.GridReference(...).sample)"
        )));
    };
    if seed == idem::train::VALIDATION_SEED {
        return Err(PyValueError::new_err(
            "this seed is the training runs' validation set; choose another for test data",
        ));
    }
    let x = g.sample(n, &mut idem::rng::stream(seed, 0));
    Ok(Array2::from_shape_vec((n, 2), x)
        .expect("n × 2")
        .into_pyarray(py))
}

/// MCMC (`idem mcmc`): returns (samples [draws·chains, dim] float64, info dict).
#[pyfunction]
#[pyo3(signature = (target, chains, warmup, steps, thin, kernel, leapfrog, temperatures, t_max, init_std, init_rows, init_step, relax_steps, seed, budget=None, target_accept=None))]
#[allow(clippy::too_many_arguments)]
fn mcmc<'py>(
    py: Python<'py>,
    target: &PyTarget,
    chains: usize,
    warmup: usize,
    steps: usize,
    thin: usize,
    kernel: &str,
    leapfrog: usize,
    temperatures: usize,
    t_max: f64,
    init_std: f64,
    init_rows: Option<PyReadonlyArray2<'py, f64>>,
    init_step: f64,
    relax_steps: usize,
    seed: u64,
    budget: Option<u64>,
    target_accept: Option<f64>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Bound<'py, PyDict>)> {
    use idem::mcmc::{Init, Kernel, McmcConfig};
    let kernel = match kernel {
        "mala" => Kernel::Mala,
        "hmc" => Kernel::Hmc { leapfrog },
        other => {
            return Err(PyValueError::new_err(format!(
                "kernel must be 'mala' or 'hmc', got {other:?}"
            )))
        }
    };
    let init = match &init_rows {
        Some(r) => Init::Rows(rows_of(r, target.target.dim())?),
        None => Init::Prior { std: init_std },
    };
    let cfg = McmcConfig {
        kernel,
        chains,
        warmup,
        steps,
        thin,
        budget,
        target_accept,
        temperatures,
        t_max,
        init,
        init_step,
        relax_steps,
        drift_cap: None,
        seed,
        trace_chains: 0,
    };
    let t = &target.target;
    let (run, conv) = py
        .detach(|| -> idem::Result<_> {
            let run = idem::mcmc::run(t, &cfg, |_, _, _| {})?;
            let conv = idem::mcmc::convergence(t, &run)?;
            Ok((run, conv))
        })
        .map_err(|e| to_py(py, Some(target), e, "in mcmc"))?;
    let info = PyDict::new(py);
    info.set_item("energy_calls", run.energy_calls)?;
    info.set_item("chains", run.chains)?;
    info.set_item("draws_per_chain", run.draws_per_chain)?;
    info.set_item("temperatures", run.temperatures.clone())?;
    info.set_item("step_sizes", run.step_sizes.clone())?;
    info.set_item("accept", run.accept.clone())?;
    info.set_item("swap_rates", run.swap_rates.clone())?;
    info.set_item("stopped_by_budget", run.stopped_by_budget)?;
    info.set_item("wall_s", run.wall_s)?;
    info.set_item("energy_rhat", conv.energy_rhat)?;
    info.set_item("energy_ess", conv.energy_ess)?;
    info.set_item("max_rhat", conv.max_rhat)?;
    info.set_item("min_ess", conv.min_ess)?;
    let n = run.samples.len() / run.dim;
    let x = Array2::from_shape_vec((n, run.dim), run.samples)
        .expect("rows × dim")
        .into_pyarray(py);
    Ok((x, info))
}

/// The exact density of a 2-D target on a grid (see `idem.GridReference`).
#[pyclass(name = "_GridReference", module = "idem._idem", frozen)]
struct PyGrid {
    grid: GridReference,
}

#[pymethods]
impl PyGrid {
    #[new]
    fn new(
        py: Python<'_>,
        target: &PyTarget,
        lo: [f64; 2],
        hi: [f64; 2],
        cells: usize,
    ) -> PyResult<Self> {
        let t = &target.target;
        let grid = py
            .detach(|| GridReference::new(t, lo, hi, cells))
            .map_err(|e| to_py(py, Some(target), e, "while evaluating the grid"))?;
        Ok(Self { grid })
    }

    fn basins(&self) -> Vec<([f64; 2], f64, f64)> {
        self.grid
            .basins()
            .iter()
            .map(|b| (b.mode, b.log_p, b.weight))
            .collect()
    }

    #[getter]
    fn edge_mass(&self) -> f64 {
        self.grid.edge_mass()
    }

    fn sample<'py>(&self, py: Python<'py>, n: usize, seed: u64) -> Bound<'py, PyArray2<f32>> {
        let x = py.detach(|| self.grid.sample(n, seed));
        Array2::from_shape_vec((n, 2), x)
            .expect("n × 2")
            .into_pyarray(py)
    }

    fn histogram_tv(&self, samples: PyReadonlyArray2<'_, f64>, bins: usize) -> PyResult<f64> {
        let s = f32_rows(&samples, 2)?;
        self.grid
            .histogram_tv(&s, bins)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn bin_masses<'py>(&self, py: Python<'py>, bins: usize) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let m = self
            .grid
            .bin_masses(bins)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Array2::from_shape_vec((bins, bins), m)
            .expect("bins²")
            .into_pyarray(py))
    }

    /// The comparison report as JSON.
    fn compare(
        &self,
        py: Python<'_>,
        samples: PyReadonlyArray2<'_, f64>,
        bins: usize,
        floor_sets: usize,
        seed: u64,
    ) -> PyResult<String> {
        let s = f32_rows(&samples, 2)?;
        let r = py
            .detach(|| self.grid.compare(&s, bins, floor_sets, seed))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(serde_json::to_string(&r).expect("a report serialises"))
    }
}

/// The built-in GMM-40's means and per-dimension standard deviations ([40, 2] each), e.g. to
/// write the same density in numpy.
#[pyfunction]
fn gmm40_table<'py>(py: Python<'py>) -> (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>) {
    let g = idem::energy::Gmm::gmm40();
    let k = g.n_modes();
    let means = Array2::from_shape_vec((k, 2), g.means().to_vec()).expect("k × 2");
    let scales = Array2::from_shape_vec((k, 2), g.scales().to_vec()).expect("k × 2");
    (means.into_pyarray(py), scales.into_pyarray(py))
}

/// Use `n` worker threads for all of idem's work in this process (call before anything else
/// runs; the default is all cores, or RAYON_NUM_THREADS).
#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot set the thread count now: {e}")))
}

#[pymodule]
fn _idem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTarget>()?;
    m.add_class::<PyGrid>()?;
    m.add_function(wrap_pyfunction!(preset_toml, m)?)?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(with_overrides, m)?)?;
    m.add_function(wrap_pyfunction!(auto_config, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(exact, m)?)?;
    m.add_function(wrap_pyfunction!(mcmc, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(gmm40_table, m)?)?;
    m.add("VALIDATION_SEED", idem::train::VALIDATION_SEED)?;
    Ok(())
}
