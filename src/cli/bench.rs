//! `idem bench`: speed figures (see `idem::bench` for what is measured).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use idem::bench::{net_cases, run_net_case, run_target_case, target_cases};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Milliseconds per DEM score-target batch at the reference shapes.
    Target {
        /// One JSON object per line: {"task", "B", "K", "ms", ...}.
        #[arg(long)]
        json: bool,
        /// Timed repetitions per shape (after one warm-up).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Only these tasks (gmm, dw4, lj13, lj55); repeatable.
        #[arg(long)]
        only: Vec<String>,
        /// Seed for points, times and noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Milliseconds per EGNN training step and per sampler step at the reference architectures.
    Net {
        /// One JSON object per line: {"task", "B_train", "train_ms", "sample_ms", ...}.
        #[arg(long)]
        json: bool,
        /// Timed repetitions per shape (after one warm-up).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Only these tasks (dw4, lj13, lj55); repeatable.
        #[arg(long)]
        only: Vec<String>,
        /// Seed for weights and points.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchWhat::Net {
            json,
            repeats,
            only,
            seed,
        } => {
            let cases: Vec<_> = net_cases()
                .into_iter()
                .filter(|c| only.is_empty() || only.iter().any(|o| o == c.task))
                .collect();
            if cases.is_empty() {
                bail!("no benchmark matches --only {only:?}; tasks: dw4, lj13, lj55");
            }
            if !json {
                println!(
                    "EGNN, {} threads, median of {repeats} (reference: PyTorch EGNN_dynamics, 2 threads)",
                    rayon::current_num_threads()
                );
                println!(
                    "{:6} {:>7} {:>8} {:>9} {:>11} {:>9} {:>9} {:>11} {:>9}",
                    "task",
                    "layers",
                    "B train",
                    "train ms",
                    "ref ms",
                    "speedup",
                    "B sample",
                    "sample ms",
                    "speedup"
                );
            }
            for case in &cases {
                let r = run_net_case(case, *repeats, *seed)?;
                if *json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:6} {:>7} {:>8} {:>9.1} {:>11.0} {:>8.1}x {:>9} {:>11.1} {:>8.1}x",
                        r.task,
                        format!("{}x{}", r.layers, r.hidden),
                        r.b_train,
                        r.train_ms,
                        r.reference_train_ms,
                        r.train_speedup,
                        r.b_sample,
                        r.sample_ms,
                        r.sample_speedup
                    );
                }
            }
            Ok(())
        }
        BenchWhat::Target {
            json,
            repeats,
            only,
            seed,
        } => {
            let cases: Vec<_> = target_cases()
                .into_iter()
                .filter(|c| only.is_empty() || only.iter().any(|o| o == c.task))
                .collect();
            if cases.is_empty() {
                bail!("no benchmark matches --only {only:?}; tasks: gmm, dw4, lj13, lj55");
            }
            if !json {
                println!(
                    "DEM score target, {} threads, median of {repeats} (reference: PyTorch torch.vmap + autograd, 2 threads)",
                    rayon::current_num_threads()
                );
                println!(
                    "{:6} {:>5} {:>6} {:>10} {:>10} {:>13} {:>15} {:>13} {:>9}",
                    "task",
                    "B",
                    "K",
                    "ms",
                    "min ms",
                    "evals/s",
                    "pair terms/s",
                    "reference ms",
                    "speedup"
                );
            }
            for case in &cases {
                let r = run_target_case(case, *repeats, *seed)?;
                if *json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:6} {:>5} {:>6} {:>10.1} {:>10.1} {:>13.3e} {:>15} {:>13.0} {:>8.0}x",
                        r.task,
                        r.b,
                        r.k,
                        r.ms,
                        r.min_ms,
                        r.evals_per_s,
                        r.pair_terms_per_s
                            .map(|p| format!("{p:.3e}"))
                            .unwrap_or_else(|| "-".into()),
                        r.reference_ms,
                        r.speedup
                    );
                }
            }
            Ok(())
        }
    }
}
