//! `idem mcmc`: reference samples by MALA / HMC with optional parallel tempering.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use idem::io::npy;
use idem::mcmc::{self, Init, Kernel, McmcConfig};
use idem::Target;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KernelArg {
    Mala,
    Hmc,
}

#[derive(Args, Debug)]
pub struct McmcArgs {
    #[arg(long)]
    target: String,
    /// Independent chains (each with `--temperatures` replicas).
    #[arg(long, default_value_t = 100)]
    chains: usize,
    /// Warm-up steps (step-size adaptation; not kept).
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Sampling steps after warm-up.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Keep every k-th sampling step of every chain.
    #[arg(long, default_value_t = 1)]
    thin: usize,
    /// Output .npy ([chains·kept draws, dim], draw-major: the first rows are one draw from each
    /// chain). A report `<out>.json` and an energy trace `<out>.trace.png` are written beside it.
    #[arg(long)]
    out: PathBuf,
    /// Stop before the target-evaluation count (initialisation and warm-up included) would
    /// exceed this, for comparisons at a matched budget.
    #[arg(long)]
    budget: Option<u64>,
    #[arg(long, value_enum, default_value = "mala")]
    kernel: KernelArg,
    /// Leapfrog steps per HMC transition.
    #[arg(long, default_value_t = 10)]
    leapfrog: usize,
    /// Replicas per chain on a geometric temperature ladder (1 = no tempering).
    #[arg(long, default_value_t = 1)]
    temperatures: usize,
    /// Highest temperature of the ladder.
    #[arg(long, default_value_t = 10.0)]
    t_max: f64,
    /// Target mean acceptance of the step-size adaptation (default: MALA 0.574, HMC 0.65).
    #[arg(long)]
    target_accept: Option<f64>,
    /// Initial step size (adapted during warm-up).
    #[arg(long, default_value_t = 1e-3)]
    step_size: f64,
    /// Start every chain from N(0, s²·I) (mean-free for particle systems).
    #[arg(long, default_value_t = 1.0)]
    init_std: f64,
    /// Start every chain from this point (comma-separated coordinates), e.g. 0,0.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    init_point: Option<Vec<f64>>,
    /// Start the chains from the rows of this .npy file (cycled).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Relaxation steps before warm-up (capped gradient ascent on log p: moves starts out of
    /// overlapping particles and other extreme energies; counted as target evaluations).
    #[arg(long, default_value_t = 100)]
    relax: usize,
    /// MALA only: truncate the drift at this multiple of the noise's norm (MALTA; still exact,
    /// moves chains out of overlaps where plain MALA rejects every step). Off by default.
    #[arg(long)]
    drift_cap: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reference samples: evaluate the result against them (metrics of `idem eval`).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Skip the aligned W2 of particle targets in the evaluation.
    #[arg(long)]
    no_aligned: bool,
}

/// `<out>` with its extension replaced by `ext`.
fn beside(out: &Path, ext: &str) -> PathBuf {
    out.with_extension(ext)
}

pub fn run(a: &McmcArgs) -> Result<()> {
    let target = Target::by_name(&a.target)?;
    let dim = target.dim();
    let init = match (&a.init_point, &a.init) {
        (Some(_), Some(_)) => bail!("give at most one of --init-point and --init"),
        (Some(p), None) => Init::Point(p.clone()),
        (None, Some(f)) => Init::Rows(
            npy::read_batch(f, dim, target.particles())?
                .data
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        (None, None) => Init::Prior { std: a.init_std },
    };
    let kernel = match a.kernel {
        KernelArg::Mala => Kernel::Mala,
        KernelArg::Hmc => Kernel::Hmc {
            leapfrog: a.leapfrog,
        },
    };
    let cfg = McmcConfig {
        kernel,
        chains: a.chains,
        warmup: a.warmup,
        steps: a.steps,
        thin: a.thin,
        budget: a.budget,
        target_accept: a.target_accept,
        temperatures: a.temperatures,
        t_max: a.t_max,
        init,
        init_step: a.step_size,
        relax_steps: a.relax,
        drift_cap: a.drift_cap,
        seed: a.seed,
        trace_chains: 8,
    };
    let bar = ProgressBar::new((a.warmup + a.steps) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} mcmc [{bar:30}] {pos}/{len} steps {msg} ({elapsed} < {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let run = mcmc::run(&target, &cfg, |step, _total, msg| {
        bar.set_position(step as u64);
        bar.set_message(msg.to_string());
    })?;
    bar.finish_and_clear();
    if run.draws_per_chain == 0 {
        bail!(
            "no samples: the run stopped after {} warm-up and {} sampling steps ({} target \
             evaluations{}); raise --budget or lower --warmup",
            run.warmup_done,
            run.steps_done,
            run.energy_calls,
            if run.stopped_by_budget {
                ", budget reached"
            } else {
                ""
            }
        );
    }
    let n = run.chains * run.draws_per_chain;
    let samples: Vec<f32> = run.samples.iter().map(|&v| v as f32).collect();
    npy::write(&a.out, &samples, &[n, dim])?;
    let conv = mcmc::convergence(&target, &run)?;
    let mut report = json!({
        "target": target.name(),
        "kernel": format!("{kernel:?}"),
        "chains": run.chains,
        "draws_per_chain": run.draws_per_chain,
        "samples": n,
        "warmup_steps": run.warmup_done,
        "sampling_steps": run.steps_done,
        "thin": a.thin,
        "relax_steps": a.relax,
        "drift_cap": a.drift_cap,
        "energy_calls": run.energy_calls,
        "stopped_by_budget": run.stopped_by_budget,
        "wall_s": run.wall_s,
        "temperatures": run.temperatures,
        "step_sizes": run.step_sizes,
        "accept": run.accept,
        "swap_rates": run.swap_rates,
        "convergence": conv,
        "seed": a.seed,
    });
    eprintln!(
        "idem: {n} samples ({} chains × {} draws) in {:.1} s, {} target evaluations{}",
        run.chains,
        run.draws_per_chain,
        run.wall_s,
        run.energy_calls,
        if run.stopped_by_budget {
            " (stopped by --budget)"
        } else {
            ""
        }
    );
    eprintln!(
        "  acceptance per temperature {:?}, step sizes {:?}",
        round(&run.accept),
        run.step_sizes
            .iter()
            .map(|v| format!("{v:.3e}"))
            .collect::<Vec<_>>()
    );
    if run.temperatures.len() > 1 {
        eprintln!(
            "  temperatures {:?}, swap rates {:?}",
            round(&run.temperatures),
            round(&run.swap_rates)
        );
    }
    eprintln!(
        "  split R̂: energy {:.3}, coordinates max {:.3} / median {:.3}; bulk ESS: energy {:.0}, \
         coordinates min {:.0} / median {:.0}",
        conv.energy_rhat,
        conv.max_rhat,
        conv.median_rhat,
        conv.energy_ess,
        conv.min_ess,
        conv.median_ess
    );
    if let Some(r) = &a.reference {
        let reference = npy::read_batch(r, dim, target.particles())?.data;
        let m = idem::eval::evaluate_with(&target, &samples, &reference, !a.no_aligned)?;
        for (k, v) in &m {
            eprintln!("  {k:16} {v:.4}");
        }
        report["metrics"] = json!(m);
        report["reference"] = json!(r.display().to_string());
    }
    let trace = beside(&a.out, "trace.png");
    idem::plot::energy_trace(
        &trace,
        &run.trace,
        run.warmup_done,
        &format!(
            "{} {kernel:?}: energy of {} chains",
            target.name(),
            run.trace.len()
        ),
    )?;
    let report_path = beside(&a.out, "json");
    npy::write_atomic(
        &report_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", report_path.display()))?;
    eprintln!(
        "idem: wrote {}, {} and {}",
        a.out.display(),
        report_path.display(),
        trace.display()
    );
    Ok(())
}

fn round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}
