//! Helpers for test suites (this crate's and the server's): a fresh, empty PostgreSQL database
//! per test on the server named by `CAIRN_TEST_POSTGRES_URL`, created through its admin URL.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The PostgreSQL server tests may use, if the environment names one.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("CAIRN_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The Redis server tests may use, if the environment names one.
pub fn redis_url() -> Option<String> {
    std::env::var("CAIRN_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Create an empty database on the server behind `admin_url` and return a URL for it.
pub async fn create_postgres_database(admin_url: &str) -> Result<String, sqlx::Error> {
    let name = format!("cairn_test_{}", uuid::Uuid::now_v7().simple());
    let opts = PgConnectOptions::from_str(admin_url)?;
    let mut conn = opts.connect().await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(admin_url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    url.set_path(&name);
    Ok(url.to_string())
}
