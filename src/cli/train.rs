//! `idem train`, `idem presets`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use idem::config::{TrainConfig, PRESETS};
use idem::train::{default_validation_path, Trainer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Built-in preset to start from (see `idem presets`).
    #[arg(long, default_value = "gmm-fast")]
    preset: String,
    /// Override a setting, e.g. --set epochs=50 --set sde.steps=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (default runs/<preset>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Random seed (network init, training noise, sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in this directory from its last checkpoint (--set may extend it, e.g. epochs).
    #[arg(long, conflicts_with_all = ["preset", "out", "seed"])]
    resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let mut trainer = match &args.resume {
        Some(dir) => Trainer::resume(dir, &args.sets, &device)
            .with_context(|| format!("cannot resume the run in {}", dir.display()))?,
        None => {
            let mut sets = args.sets.clone();
            if let Some(s) = args.seed {
                sets.push(format!("seed={s}"));
            }
            let cfg = TrainConfig::preset(&args.preset)?.with_overrides(&sets)?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", args.preset, cfg.seed)));
            eprintln!(
                "idem: training {} ({} epochs) into {}",
                args.preset,
                cfg.epochs,
                out.display()
            );
            Trainer::create(&cfg, &out, &device)
                .with_context(|| format!("cannot start a run in {}", out.display()))?
        }
    };
    let epochs = trainer.model.cfg.epochs;
    if !trainer.has_validation() {
        let cfg = &trainer.model.cfg;
        eprintln!(
            "idem: warning: no validation data for {} (looked for {}; set IDEM_DATA_DIR or \
             --set validation=FILE): this run will have no validation metrics, no best checkpoint \
             and no final evaluation",
            cfg.target,
            default_validation_path(&cfg.target).display()
        );
    }
    trainer
        .run_to_end(args.quiet, |_| Ok(()))
        .with_context(|| {
            format!(
                "training stopped at epoch {}; the last checkpoint in {} is intact (resume with --resume)",
                trainer.epoch + 1,
                trainer.dir().display()
            )
        })?;
    let report =
        idem::report::finish_run(&trainer, args.quiet).context("final sampling and evaluation")?;
    let (wall, calls) = trainer.totals();
    println!("{report}");
    eprintln!(
        "idem: trained {epochs} epochs in {:.1} min with {calls} energy calls; run directory {}",
        wall / 60.0,
        trainer.dir().display()
    );
    Ok(())
}

pub fn presets() -> Result<()> {
    for (name, text) in PRESETS {
        let about = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches('#')
            .trim();
        println!("{name:12} {about}");
    }
    Ok(())
}
