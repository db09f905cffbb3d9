//! Command-line interface: argument parsing and dispatch. Each subcommand lives in its own file
//! and only calls the library.

mod bench;
mod energy;

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
