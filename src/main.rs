//! The `idem` command-line tool. See `idem --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
