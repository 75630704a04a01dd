//! Logging: JSON lines or human-readable output on stdout, filtered `RUST_LOG`-style. Every
//! line logged while serving a request carries that request's id (from the request span).

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. Call once, from `main`; a second call is ignored.
pub fn init(format: LogFormat, filter: &str) {
    init_to(format, filter, false);
}

/// As [`init`], logging to stderr: for commands whose stdout is their output (`--json`).
pub fn init_stderr(format: LogFormat, filter: &str) {
    init_to(format, filter, true);
}

fn init_to(format: LogFormat, filter: &str, stderr: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = if stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    let writer = if stderr {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal)
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    drop(result);
}
