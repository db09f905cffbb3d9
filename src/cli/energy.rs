//! `idem energy`: log p and ∇log p of a built-in target for every configuration of a .npy file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use idem::io::npy;
use idem::Target;

#[derive(Args, Debug)]
pub struct EnergyArgs {
    /// Target name (see `idem targets`): gmm40, dw4, lj13, lj55, ljN.
    #[arg(long)]
    target: String,
    /// Configurations, float32 or float64 .npy of shape [N, dim] (or [N, n_particles, spatial_dim]).
    #[arg(long)]
    input: PathBuf,
    /// Where to write log p, float32 .npy of shape [N].
    #[arg(long)]
    out: PathBuf,
    /// Also write ∇log p here, float32 .npy with the input's shape.
    #[arg(long)]
    grad: Option<PathBuf>,
}

pub fn run(args: &EnergyArgs) -> Result<()> {
    let target = Target::by_name(&args.target)?;
    if args.grad.as_ref() == Some(&args.out) {
        bail!("--out and --grad name the same file {}", args.out.display());
    }
    let batch = npy::read_batch(&args.input, target.dim(), target.particles())
        .with_context(|| format!("reading configurations for target {}", target.name()))?;
    if batch.dtype == "float64" {
        eprintln!(
            "note: {} is float64; evaluating in float32 as idem does everywhere",
            args.input.display()
        );
    }
    let start = Instant::now();
    let mut logp = vec![0.0f32; batch.n];
    let report = match &args.grad {
        Some(_) => {
            let mut grad = vec![0.0f32; batch.data.len()];
            let r = target.log_prob_grad_batch(&batch.data, &mut logp, &mut grad)?;
            // write the gradient first: if it fails, nothing at --out was replaced
            let path = args.grad.as_ref().expect("checked above");
            npy::write(path, &grad, &batch.shape)?;
            r
        }
        None => target.log_prob_batch(&batch.data, &mut logp)?,
    };
    npy::write(&args.out, &logp, &[batch.n])?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if report.invalid > 0 {
        eprintln!(
            "warning: {} of {} configurations are invalid (overlapping particles or overflow): log p = -inf{}",
            report.invalid,
            batch.n,
            if args.grad.is_some() { ", gradient 0" } else { "" }
        );
    }
    eprintln!(
        "{}: {} configurations in {ms:.1} ms -> {}{}",
        target.name(),
        batch.n,
        args.out.display(),
        args.grad
            .as_ref()
            .map(|g| format!(", {}", g.display()))
            .unwrap_or_default()
    );
    Ok(())
}
