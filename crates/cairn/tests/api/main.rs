//! Cairn's HTTP and command-line suite: one test binary, a real server per test on port 0,
//! a fresh database per test, on SQLite always and on PostgreSQL when
//! `CAIRN_TEST_POSTGRES_URL` names a server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod access_matrix;
mod accounts;
mod admin;
mod api_keys;
mod backup;
mod chat;
mod cli;
mod documents;
mod health;
mod http;
mod invites;
mod monitoring_assets;
mod openai_sdk;
mod rate_limits;
mod replicas;
mod search;
mod startup;
mod tls;
mod totp;
mod workspace;
