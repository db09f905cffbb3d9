//! The end of a training run: final samples from the last checkpoint, their evaluation on the
//! validation set, `samples.npy`, `summary.json` and the plots; with `refine_steps`, the refined
//! samples (`samples_refined.npy`, `plots/refined/`) and their figures beside the sampler's.

use serde_json::json;

use crate::error::Result;
use crate::eval;
use crate::io::npy;
use crate::model::ScoreModel;
use crate::plot;
use crate::rng::mix64;
use crate::train::{validation_set, Trainer};

/// Write the run's final artefacts and return a short human-readable report.
pub fn finish_run(trainer: &Trainer) -> Result<String> {
    let dir = trainer.dir();
    let cfg = &trainer.model.cfg;
    // the last checkpoint: a W2 on 1000 validation points varies by about ±1 between sample sets,
    // so the best-by-validation epoch is mostly picked by noise (best.safetensors is kept)
    let file = "checkpoint.safetensors";
    let model = ScoreModel::load_with(
        dir,
        file,
        Some(trainer.model.target.clone()),
        &trainer.model.device,
    )?;
    let dim = model.target.dim();
    let samples = model.generate(
        cfg.eval_samples,
        mix64(cfg.seed ^ 0xF1A1),
        &cfg.final_sde(),
        1000,
    )?;
    npy::write(
        &dir.join("samples.npy"),
        &samples,
        &[samples.len() / dim, dim],
    )?;
    let validation = validation_set(cfg, &model.target)?;
    let metrics = match &validation {
        Some(v) => Some(eval::evaluate_with(
            &model.target.clone(),
            &samples,
            v,
            true,
        )?),
        None => None,
    };
    // the refinement option: its samples and figures beside the sampler's, never instead
    let refined = match model.refine(&samples, cfg.seed)? {
        Some((r, rep)) => {
            npy::write(&dir.join("samples_refined.npy"), &r, &[r.len() / dim, dim])?;
            let m = match &validation {
                Some(v) => Some(eval::evaluate_with(&model.target.clone(), &r, v, true)?),
                None => None,
            };
            Some((r, rep, m))
        }
        None => None,
    };
    let (wall, calls) = trainer.totals();
    let mut summary = json!({
        "checkpoint": file,
        "epochs": trainer.epoch,
        "wall_s": wall,
        "energy_calls": calls,
        "validation": metrics,
    });
    if let Some((_, rep, m)) = &refined {
        summary["refinement"] = json!(rep);
        summary["validation_refined"] = json!(m);
        summary["energy_calls_with_refinement"] = json!(calls + rep.energy_calls);
    }
    npy::write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    let mut notes = Vec::new();
    let plots = dir.join("plots");
    let title = format!("{} {:?}, {} epochs", cfg.target, cfg.mode, trainer.epoch);
    match &validation {
        Some(v) => {
            if let Err(e) = plot::sample_plots(&plots, &model.target, &samples, v, &title) {
                notes.push(format!("warning: {e}"));
            }
            if let Some((r, rep, _)) = &refined {
                let title = format!("{title}, refined ({} MALA steps)", rep.steps);
                if let Err(e) =
                    plot::sample_plots(&plots.join("refined"), &model.target, r, v, &title)
                {
                    notes.push(format!("warning: {e}"));
                }
            }
        }
        None => notes.push(format!(
            "no validation data for {} (see `validation` in config.toml): no metrics or plots",
            cfg.target
        )),
    }
    let mut out = format!(
        "validation metrics of {} samples from {file}:\n",
        samples.len() / dim
    );
    match &refined {
        None => {
            for (k, v) in metrics.iter().flatten() {
                out.push_str(&format!("  {k:16} {v:.4}\n"));
            }
        }
        Some((_, rep, m)) => {
            out.push_str(&format!(
                "  {:16} {:>10} {:>10}   (refined: {} MALA steps per sample, step size {:.3e}, \
                 acceptance {:.2}, {} energy calls)\n",
                "", "sampler", "refined", rep.steps, rep.step_size, rep.accept, rep.energy_calls
            ));
            if let (Some(a), Some(b)) = (&metrics, m) {
                for (k, v) in a {
                    let w = b.get(k).copied().unwrap_or(f64::NAN);
                    out.push_str(&format!("  {k:16} {v:10.4} {w:10.4}\n"));
                }
            }
        }
    }
    out.push_str(&format!(
        "samples: {}{}\nmetrics: {}\nsummary: {}\nplots:   {}",
        dir.join("samples.npy").display(),
        if refined.is_some() {
            format!(" (refined: {})", dir.join("samples_refined.npy").display())
        } else {
            String::new()
        },
        dir.join("metrics.jsonl").display(),
        dir.join("summary.json").display(),
        plots.display()
    ));
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    Ok(out)
}
