//! `idem bench`: speed figures (see `idem::bench` for what is measured).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use idem::bench::{net_cases, run_net_case, run_target_case, target_cases};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

/// Options shared by every benchmark.
#[derive(Args, Debug)]
struct Common {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed repetitions per shape (after one warm-up).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only these tasks (e.g. dw4, lj13); repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Seed for points, times, noise and weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct TargetArgs {
    #[command(flatten)]
    common: Common,
    /// The reference's ms per batch measured in this session, as JSON in the format of
    /// ../shared/data/reference/timings.json ({"reference_ms": {"gmm40": {"ms": ..}, "dw4": ..}});
    /// without it the speed-ups use the built-in figures of that file (2026-12-03, another machine).
    #[arg(long, value_name = "JSON")]
    reference: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Milliseconds per DEM score-target batch at the reference shapes (tasks gmm, gmm-blend, dw4, lj13, lj55).
    Target(TargetArgs),
    /// Milliseconds per EGNN training step and per sampler step at the reference architectures
    /// (tasks dw4, lj13, lj55).
    Net(Common),
}

/// The cases whose task is in `only` (all if empty); an error naming the tasks if none is.
fn select<T>(cases: Vec<T>, task: impl Fn(&T) -> &str, only: &[String]) -> Result<Vec<T>> {
    let all: Vec<String> = cases.iter().map(|c| task(c).to_string()).collect();
    let chosen: Vec<T> = cases
        .into_iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| o == task(c)))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no benchmark matches --only {only:?}; tasks: {}",
            all.join(", ")
        );
    }
    Ok(chosen)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchWhat::Net(Common {
            json,
            repeats,
            only,
            seed,
        }) => {
            let cases = select(net_cases(), |c| c.task, only)?;
            if !json {
                println!(
                    "EGNN, {} threads, median of {repeats} (reference: PyTorch EGNN_dynamics, 2 threads)",
                    rayon::current_num_threads()
                );
                println!(
                    "(GF/s: matrix-product GFLOP/s of the step; machine: this host's [768x128]x[128x128] product GFLOP/s on the same threads, measured before each case)"
                );
                println!(
                    "(lj55-fast: the network of the lj55-fast preset against the reference architecture's step, 5x128: architecture and code together)"
                );
                println!(
                    "{:9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10} {:>9} {:>6} {:>8}",
                    "task",
                    "layers",
                    "B train",
                    "train ms",
                    "ref ms",
                    "speedup",
                    "GF/s",
                    "B sample",
                    "sample ms",
                    "speedup",
                    "GF/s",
                    "machine"
                );
            }
            for case in &cases {
                let r = run_net_case(case, *repeats, *seed)?;
                if *json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:9} {:>7} {:>8} {:>9.1} {:>9.0} {:>8.1}x {:>6.0} {:>9} {:>10.1} {:>8.1}x {:>6.0} {:>8.0}",
                        r.task,
                        format!("{}x{}", r.layers, r.hidden),
                        r.b_train,
                        r.train_ms,
                        r.reference_train_ms,
                        r.train_speedup,
                        r.train_gflops,
                        r.b_sample,
                        r.sample_ms,
                        r.sample_speedup,
                        r.sample_gflops,
                        r.machine_gemm_gflops
                    );
                }
            }
            Ok(())
        }
        BenchWhat::Target(TargetArgs {
            common:
                Common {
                    json,
                    repeats,
                    only,
                    seed,
                },
            reference,
        }) => {
            let mut cases = select(target_cases(), |c| c.task, only)?;
            let source = match reference {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read the reference timings {}", path.display())
                    })?;
                    let table = idem::bench::reference_ms_from_json(&text)
                        .with_context(|| path.display().to_string())?;
                    cases = idem::bench::with_reference_ms(cases, &table)?;
                    format!("{} (same session)", path.display())
                }
                None => "built in: ../shared/data/reference/timings.json of 2026-12-03, another machine; pass --reference for a same-run ratio".into(),
            };
            if !json {
                println!(
                    "DEM score target, {} threads, median of {repeats} (reference: PyTorch torch.vmap + autograd, 2 threads; its ms: {source})",
                    rayon::current_num_threads()
                );
                println!(
                    "(LJ: GFLOP/s of the pair kernel, {} flops per pair, over the whole estimate; peak: this host's f32 FMA GFLOP/s on the same threads, measured before the case)",
                    idem::bench::LJ_FLOPS_PER_PAIR
                );
                println!(
                    "{:9} {:>5} {:>6} {:>10} {:>10} {:>13} {:>15} {:>13} {:>9} {:>7} {:>7} {:>7}",
                    "task",
                    "B",
                    "K",
                    "ms",
                    "min ms",
                    "evals/s",
                    "pair terms/s",
                    "reference ms",
                    "speedup",
                    "GF/s",
                    "peak",
                    "of peak"
                );
            }
            for case in &cases {
                let r = run_target_case(case, *repeats, *seed)?;
                if *json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| {
                        v.map(f).unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "{:9} {:>5} {:>6} {:>10.1} {:>10.1} {:>13.3e} {:>15} {:>13.0} {:>8.0}x {:>7} {:>7} {:>7}",
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
                        r.speedup,
                        opt(r.lj_gflops, &|g| format!("{g:.1}")),
                        opt(r.fma_peak_gflops, &|g| format!("{g:.0}")),
                        opt(r.fraction_of_fma_peak, &|f| format!("{:.0}%", 100.0 * f)),
                    );
                }
            }
            Ok(())
        }
    }
}
