//! The end of a training run: final samples from the last checkpoint, their evaluation on the
//! validation set, `samples.npy`, `summary.json` and the plots; with `refine_steps`, the refined
//! samples (`samples_refined.npy`, `plots/refined/`), and with `reweight_proposals` the
//! importance-resampled ones (`samples_reweighted.npy`, `plots/reweighted/`), and with both the
//! resampled ones refined (`samples_reweighted_refined.npy`, what `idem sample` returns), with
//! their figures beside the sampler's.

use serde_json::json;

use crate::error::Result;
use crate::eval;
use crate::io::npy;
use crate::model::ScoreModel;
use crate::plot;
use crate::rng::mix64;
use crate::train::{validation_set, Trainer};

/// Write the run's final artefacts and return a short human-readable report; the
/// importance-resampling option shows a progress bar on stderr unless `quiet`.
pub fn finish_run(trainer: &Trainer, quiet: bool) -> Result<String> {
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
    // PIS / DDS: with their paths' importance weights (log Z, ESS)
    let (samples, paths) = model.final_samples(cfg.eval_samples, mix64(cfg.seed ^ 0xF1A1))?;
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
    // the refinement and importance-resampling options: their samples and figures beside the
    // sampler's, never instead
    let evaluate = |x: &[f32]| -> Result<Option<eval::Metrics>> {
        match &validation {
            Some(v) => Ok(Some(eval::evaluate_with(
                &model.target.clone(),
                x,
                v,
                true,
            )?)),
            None => Ok(None),
        }
    };
    let mut variants: Vec<Variant> = Vec::new();
    if let Some((r, rep)) = model.refine(&samples, cfg.seed)? {
        variants.push(Variant {
            key: "refined",
            name: "refinement",
            file: "samples_refined.npy",
            note: format!(
                "refined: {} MALA steps per sample, step size {:.3e}, acceptance {:.2}, {} energy calls",
                rep.steps, rep.step_size, rep.accept, rep.energy_calls
            ),
            title: format!("refined ({} MALA steps)", rep.steps),
            metrics: evaluate(&r)?,
            energy_calls: rep.energy_calls,
            report: json!(rep),
            samples: r,
        });
    }
    let mut bar = crate::progress::StageBar::new(quiet, "importance resampling:");
    let reweighted = model.reweight(&samples, cfg.seed, |s, d, t| bar.update(s, d, t))?;
    drop(bar);
    if let Some((r, rep)) = reweighted {
        // with both options on, `idem sample` refines the resampled points (resample-move): that
        // pipeline's output gets its own column
        let both = match model.refine(&r, cfg.seed)? {
            Some((rr, rrep)) => Some(Variant {
                key: "reweighted_refined",
                name: "refinement_after_reweighting",
                file: "samples_reweighted_refined.npy",
                note: format!(
                    "reweighted_refined: the resampled points after {} MALA steps (acceptance \
                     {:.2}, {} energy calls), as `idem sample` returns them",
                    rrep.steps, rrep.accept, rrep.energy_calls
                ),
                title: format!("reweighted, then {} MALA steps", rrep.steps),
                metrics: evaluate(&rr)?,
                energy_calls: rep.energy_calls + rrep.energy_calls,
                report: json!(rrep),
                samples: rr,
            }),
            None => None,
        };
        variants.push(Variant {
            key: "reweighted",
            name: "reweighting",
            file: "samples_reweighted.npy",
            note: format!(
                "reweighted: CNF importance resampling of {} proposals, ESS {:.3}, {} distinct, \
                 {} energy calls, {:.0} s",
                rep.resampling.proposals,
                rep.resampling.ess,
                rep.resampling.distinct,
                rep.energy_calls,
                rep.wall_s
            ),
            title: format!(
                "reweighted (ESS {:.2} of {})",
                rep.resampling.ess, rep.resampling.proposals
            ),
            metrics: evaluate(&r)?,
            energy_calls: rep.energy_calls,
            report: json!(rep),
            samples: r,
        });
        variants.extend(both);
    }
    for v in &variants {
        npy::write(&dir.join(v.file), &v.samples, &[v.samples.len() / dim, dim])?;
    }
    let (wall, calls) = trainer.totals();
    let mut summary = json!({
        "checkpoint": file,
        "epochs": trainer.epoch,
        "wall_s": wall,
        "energy_calls": calls,
        "validation": metrics,
    });
    if let Some(p) = &paths {
        summary["path_importance"] = json!(p);
    }
    for v in &variants {
        let name = v.name;
        summary[name] = v.report.clone();
        summary[format!("validation_{}", v.key)] = json!(v.metrics);
        summary[format!("energy_calls_with_{name}")] = json!(calls + v.energy_calls);
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
            for x in &variants {
                let title = format!("{title}, {}", x.title);
                if let Err(e) =
                    plot::sample_plots(&plots.join(x.key), &model.target, &x.samples, v, &title)
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
    if variants.is_empty() {
        for (k, v) in metrics.iter().flatten() {
            out.push_str(&format!("  {k:16} {v:.4}\n"));
        }
    } else {
        out.push_str(&format!("  {:16} {:>10}", "", "sampler"));
        for v in &variants {
            out.push_str(&format!(" {:>10}", v.key));
        }
        out.push('\n');
        if let Some(a) = &metrics {
            for (k, val) in a {
                out.push_str(&format!("  {k:16} {val:10.4}"));
                for v in &variants {
                    let w = v
                        .metrics
                        .as_ref()
                        .and_then(|m| m.get(k))
                        .copied()
                        .unwrap_or(f64::NAN);
                    out.push_str(&format!(" {w:10.4}"));
                }
                out.push('\n');
            }
        }
        for v in &variants {
            out.push_str(&format!("  ({})\n", v.note));
        }
    }
    out.push_str(&format!("samples: {}", dir.join("samples.npy").display()));
    for v in &variants {
        out.push_str(&format!(" ({}: {})", v.key, dir.join(v.file).display()));
    }
    out.push_str(&format!(
        "\nmetrics: {}\nsummary: {}\nplots:   {}",
        dir.join("metrics.jsonl").display(),
        dir.join("summary.json").display(),
        plots.display()
    ));
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    Ok(out)
}

/// Final samples changed by an option (refinement, importance resampling), reported beside the
/// sampler's.
struct Variant {
    /// Column name, `validation_<key>` in summary.json, `plots/<key>/`.
    key: &'static str,
    /// Its report in summary.json, and `energy_calls_with_<name>` (training + the option's calls).
    name: &'static str,
    file: &'static str,
    note: String,
    title: String,
    metrics: Option<eval::Metrics>,
    energy_calls: u64,
    report: serde_json::Value,
    samples: Vec<f32>,
}
