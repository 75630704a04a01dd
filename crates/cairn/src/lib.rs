//! Cairn's server: configuration, the HTTP application and the command line.
//!
//! A code tour is in `docs/ARCHITECTURE.md`. In brief:
//! - [`accounts`] — people: passwords, tokens, sign-in, sessions, first-run setup.
//! - [`auth`] — the one authorization layer every route goes through.
//! - [`config`] — the typed configuration, its layers, and the production checks.
//! - [`app`] — `Application::build(config)` and the run loop with graceful shutdown.
//! - [`http`] — the router, middleware, error body and extractors shared by every capability.
//! - [`ops`] — health and metrics.
//! - [`keys`] — signing, data and cookie keys (loaded, or generated into the data directory).
//! - [`datadir`] — creating and checking the data directory.
//! - [`telemetry`] — logging.
//! - [`cli`] — the `cairn` command line.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod chat;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod datadir;
pub mod doctor;
pub mod documents;
pub mod http;
pub mod keys;
pub mod ops;
pub mod probe;
pub mod search;
pub mod telemetry;
pub mod tls;

pub use app::{AppState, Application};
pub use config::Config;
