//! The end of a training run: final samples from the last checkpoint, their evaluation on the
//! validation set, `samples.npy`, `summary.json` and the plots.

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
    let (wall, calls) = trainer.totals();
    let summary = json!({
        "checkpoint": file,
        "epochs": trainer.epoch,
        "wall_s": wall,
        "energy_calls": calls,
        "validation": metrics,
    });
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
    for (k, v) in metrics.iter().flatten() {
        out.push_str(&format!("  {k:16} {v:.4}\n"));
    }
    out.push_str(&format!(
        "samples: {}\nmetrics: {}\nsummary: {}\nplots:   {}",
        dir.join("samples.npy").display(),
        dir.join("metrics.jsonl").display(),
        dir.join("summary.json").display(),
        plots.display()
    ));
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    Ok(out)
}
