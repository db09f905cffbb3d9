//! `idem sample`, `idem exact`, `idem eval`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use idem::io::npy;
use idem::model::ScoreModel;
use idem::rng::stream;
use idem::train::{exact_sampler, VALIDATION_SEED};
use idem::Target;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `idem train`.
    #[arg(long)]
    run: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', long, default_value_t = 1000)]
    n: usize,
    /// Output .npy ([n, dim], target coordinates).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint: `last` (the end of training) or `best` (best validation W2; optimistic, since
    /// W2 on 1000 points is noisy).
    #[arg(long, default_value = "last")]
    checkpoint: String,
    /// Override sampler settings, e.g. --set final_sde_steps=500 --set sde.ode=true, or
    /// --set refine_steps=40 for MALA refinement of the samples, --set reweight_proposals=4000
    /// for CNF importance resampling (applied first when both are set; energy calls printed).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(a: &SampleArgs) -> Result<()> {
    let file = match a.checkpoint.as_str() {
        "best" => "best.safetensors",
        "last" => "checkpoint.safetensors",
        other => bail!("--checkpoint must be `best` or `last`, got `{other}`"),
    };
    let mut model = ScoreModel::load(&a.run, file, &candle_core::Device::Cpu)
        .with_context(|| format!("cannot load the model of {}", a.run.display()))?;
    // options that depend on how many samples are drawn (reweight_proposals ≥ n) are checked
    // against -n, not against the run's eval_samples
    model.cfg.eval_samples = a.n;
    model.cfg = model.cfg.with_overrides(&a.sets)?;
    let dim = model.target.dim();
    let mut bar = idem::progress::StageBar::new(false, "importance resampling:");
    let (x, done) = model.sample_with_progress(a.n, a.seed, |s, d, t| bar.update(s, d, t))?;
    drop(bar);
    if let Some(rep) = done.reweighting {
        let r = &rep.resampling;
        eprintln!(
            "idem: importance-resampled from {} CNF proposals (ESS {:.3}, {} distinct, largest \
             weight {:.2e}, log Z ≈ {:.3}, {} energy calls, {:.0} s)",
            r.proposals, r.ess, r.distinct, r.max_weight, r.logz, rep.energy_calls, rep.wall_s
        );
    }
    if let Some(rep) = done.refinement {
        eprintln!(
            "idem: refined with {} MALA steps per sample (step size {:.3e}, acceptance {:.2}, \
             {} energy calls, {} invalid samples kept as drawn)",
            rep.steps, rep.step_size, rep.accept, rep.energy_calls, rep.invalid_kept
        );
    }
    npy::write(&a.out, &x, &[a.n, dim])?;
    if let Some(p) = &done.paths {
        eprintln!(
            "idem: the {} paths' importance weights: log Z ≈ {:.4} (ELBO {:.4}), ESS {:.3}",
            p.paths, p.log_z, p.elbo, p.ess
        );
    }
    eprintln!("idem: wrote {} samples to {}", a.n, a.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExactArgs {
    #[arg(long)]
    target: String,
    #[arg(short = 'n', long, default_value_t = 1000)]
    n: usize,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn exact(a: &ExactArgs) -> Result<()> {
    let Some(g) = exact_sampler(&a.target) else {
        bail!(
            "target `{}` has no exact sampler (only gmm40 has one)",
            a.target
        );
    };
    if a.seed == VALIDATION_SEED {
        bail!("seed {VALIDATION_SEED} is the training runs' validation set; choose another for test data");
    }
    let x = g.sample(a.n, &mut stream(a.seed, 0));
    npy::write(&a.out, &x, &[a.n, 2])?;
    eprintln!("idem: wrote {} exact samples to {}", a.n, a.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    target: String,
    /// Samples to judge (.npy, [n, dim] or [n, particles, spatial dim]).
    #[arg(long)]
    samples: PathBuf,
    /// Reference samples (.npy).
    #[arg(long)]
    reference: PathBuf,
    /// One JSON object {metric: value} instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the aligned W2 of particle targets (m² alignments: seconds to minutes for m = 1000).
    #[arg(long)]
    no_aligned: bool,
    /// Also raw W2 averaged over all pairs of N-row chunks of both files (`w2_chunks_mean`, its
    /// standard error `w2_chunks_se`, …): e.g. 10 000 samples vs 10 000 exact points with N = 1000
    /// gives 100 pairs and a W2 at N = 1000 whose draw-to-draw noise is averaged out.
    #[arg(long, value_name = "N")]
    w2_chunk: Option<usize>,
    /// Also the adjoint-sampling papers' protocol for particle systems (`as_*` metrics):
    /// `--protocol-rows` generated vs as many reference samples drawn without replacement,
    /// geometric W2 (Hungarian assignment, then Kabsch with reflections), energy W2 and
    /// interatomic-distance W2 (`idem::eval::geometric` docs).
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Rows of each set under `--protocol` (the papers: 2000).
    #[arg(long, default_value_t = idem::eval::geometric::PROTOCOL_ROWS)]
    protocol_rows: usize,
    /// Seed of the rows drawn under `--protocol`.
    #[arg(long, default_value_t = 0)]
    protocol_seed: u64,
    /// Also draw the plots of `idem plot` (energy histogram; for particle systems the
    /// interatomic-distance histogram) into this folder.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

/// Published evaluation protocols `idem eval` can add to its own metrics.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Protocol {
    /// Havens et al. 2025 (AS) and Liu et al. 2025 (ASBS): 2000 vs 2000, geometric W2.
    AdjointSampling,
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    let (target, s, r) = read_pair(&a.target, &a.samples, &a.reference)?;
    let mut m = idem::eval::evaluate_with(&target, &s, &r, !a.no_aligned)?;
    if let Some(size) = a.w2_chunk {
        m.extend(idem::eval::chunked_w2(&target, &s, &r, size)?);
    }
    if let Some(Protocol::AdjointSampling) = a.protocol {
        m.extend(idem::eval::geometric::adjoint_sampling_protocol(
            &target,
            &s,
            &r,
            a.protocol_rows,
            a.protocol_seed,
        )?);
    }
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        for (k, v) in &m {
            println!("{k:16} {v:.4}");
        }
    }
    if let Some(dir) = &a.plots {
        idem::plot::sample_plots(dir, &target, &s, &r, &title_of(&a.samples))?;
        eprintln!("idem: plots in {}", dir.display());
    }
    Ok(())
}

/// The file name of a sample file, as a plot title.
fn title_of(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    #[arg(long)]
    target: String,
    #[arg(long)]
    samples: PathBuf,
    #[arg(long)]
    reference: PathBuf,
    /// Output folder for the PNG files.
    #[arg(long)]
    out: PathBuf,
}

pub fn plot(a: &PlotArgs) -> Result<()> {
    let (target, s, r) = read_pair(&a.target, &a.samples, &a.reference)?;
    idem::plot::sample_plots(&a.out, &target, &s, &r, &title_of(&a.samples))?;
    eprintln!("idem: plots in {}", a.out.display());
    Ok(())
}

/// The target and two sample files of it (`[n, dim]`, checked against the target's shape).
fn read_pair(target: &str, a: &PathBuf, b: &PathBuf) -> Result<(Target, Vec<f32>, Vec<f32>)> {
    let target = Target::by_name(target)?;
    let read = |p: &PathBuf| -> Result<Vec<f32>> {
        Ok(npy::read_batch(p, target.dim(), target.particles())?.data)
    };
    let (x, y) = (read(a)?, read(b)?);
    Ok((target, x, y))
}
