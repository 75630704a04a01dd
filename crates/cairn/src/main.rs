//! The `cairn` binary: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    cairn::cli::run(cairn::cli::Cli::parse())
}
