//! Command-line interface: argument parsing and dispatch. Each subcommand lives in its own file
//! and only calls the library.

mod bench;
mod energy;
mod mcmc;
mod nll;
mod sample;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// idem — Iterated Denoising Energy Matching: learn to sample Boltzmann densities from their energy.
#[derive(Parser, Debug)]
#[command(name = "idem", version, about, long_about = None)]
struct Cli {
    /// Worker threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the built-in targets.
    Targets,
    /// Evaluate log p (and ∇log p) of a target on a batch of configurations from a .npy file.
    Energy(energy::EnergyArgs),
    /// Print speed benchmarks.
    Bench(bench::BenchArgs),
    /// Train a sampler (iDEM, pDEM, PIS or DDS: the preset's `mode`) from a preset (writes a run directory).
    Train(train::TrainArgs),
    /// List the built-in training presets.
    Presets,
    /// Draw samples from a trained run.
    Sample(sample::SampleArgs),
    /// Exact samples of a target that has an exact sampler (gmm40), e.g. test sets.
    Exact(sample::ExactArgs),
    /// Evaluate samples against reference samples (W2, energy W2, TV, ...).
    Eval(sample::EvalArgs),
    /// Reference samples by MCMC (MALA / HMC, optional parallel tempering) with diagnostics.
    Mcmc(mcmc::McmcArgs),
    /// Likelihood evaluation: fit a CNF on samples, report test NLL, log Z and ESS.
    Nll(nll::NllArgs),
    /// Plot samples against reference samples (log-density with samples for 2-D targets, energy histograms).
    Plot(sample::PlotArgs),
}

/// Parse arguments, run, and map errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: cannot set up {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Targets => {
            for (name, about) in idem::energy::BUILT_IN {
                println!("{name:8} {about}");
            }
            Ok(())
        }
        Command::Energy(args) => energy::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Presets => train::presets(),
        Command::Sample(args) => sample::run(&args),
        Command::Exact(args) => sample::exact(&args),
        Command::Eval(args) => sample::eval(&args),
        Command::Plot(args) => sample::plot(&args),
        Command::Mcmc(args) => mcmc::run(&args),
        Command::Nll(args) => nll::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
