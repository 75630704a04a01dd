//! The `cairn` command line: argument definitions and what each subcommand does. Anything
//! with more logic than wiring lives in the module it belongs to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::{self, Config, ConfigError, Inputs, LogFormat, Mode};
use crate::keys;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a self-hosted AI workspace for teams, in one binary.",
    long_about = "Cairn: a self-hosted AI workspace for teams, in one binary.\n\n\
        Configuration comes from defaults, a TOML file, CAIRN_* environment variables, \
        CAIRN_*_FILE secret files and flags, in that order of precedence. \
        `cairn config reference` lists every setting."
)]
pub struct Cli {
    /// Configuration file (TOML). Default: <data dir>/cairn.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (database, secrets, files). Default: ./cairn-data.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Set any setting, e.g. --set http.body_limit_bytes=1048576. Repeatable; wins over all else.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (API, web app, workers) until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Bring the database schema up to date, or show what would change.
    Migrate {
        /// List the migrations that would run, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect and validate the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage secret material.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Manage accounts from the server's side (first owner, password resets).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run ingestion workers only (no HTTP), beside servers started with `ingest.workers = 0`.
    Worker {
        /// How many jobs to run at once. Default: `ingest.workers` (at least 1).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Import files and folders into a collection, skipping what it already has.
    Import {
        /// Files or folders (walked recursively; hidden entries skipped).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<std::path::PathBuf>,
        /// The collection, by name; created if you have none by that name.
        #[arg(long, value_name = "NAME")]
        collection: String,
        /// Import as this account. Default: the workspace's owner.
        #[arg(long = "as", value_name = "EMAIL")]
        as_email: Option<String>,
        /// Only queue the files (a running server's workers ingest them); do not wait.
        #[arg(long)]
        no_wait: bool,
    },
    /// Check the deployment (configuration, data directory, disk, database and schema, Redis,
    /// file storage, backups, clock, model providers); each problem with its fix. Exit 1 on a
    /// failure.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Back up, list, verify and restore the workspace (database and files).
    #[command(subcommand)]
    Backup(crate::backup::cli::BackupCommand),
    /// Measure the product: retrieval quality on a dataset.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Ask a running server for its health; exit 0 when healthy (for container health checks).
    Health {
        /// The health URL. Default: /api/health on the configured listen address.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5, value_name = "SECS")]
        timeout_secs: u64,
    },
    /// Print the OpenAPI document of the HTTP API (docs/openapi.json is its output).
    Openapi,
    /// Print the version.
    Version {
        /// As JSON, with the schema versions this binary knows.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (the `listen` setting).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and list every problem; exit 1 if there is any.
    Check {
        /// Also apply production mode's checks, whatever `env` says.
        #[arg(long)]
        production: bool,
    },
    /// Print each setting's effective value (secrets redacted) and where it came from.
    Show {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the reference of every setting as Markdown (docs/configuration.md).
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account: the owner when the workspace has none (no setup token needed), else an admin.
    Create {
        #[arg(long)]
        email: String,
        /// Display name. Default: the part of the email before the @.
        #[arg(long)]
        name: Option<String>,
        /// owner, admin or member. Default: owner if there is none, else admin.
        #[arg(long, value_parser = ["owner", "admin", "member"])]
        role: Option<String>,
        /// Read the password from standard input (required: passwords are never arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set a new password for an account and end all of its sessions.
    ResetPassword {
        #[arg(long)]
        email: String,
        /// Read the new password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Write fresh secrets to DIR, one file each, ready for CAIRN_*_FILE.
    Generate {
        /// Directory to write into (created owner-only if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
}

impl Cli {
    fn inputs(&self, listen: Option<&str>) -> Result<Inputs, String> {
        let mut inputs = Inputs::from_process_env();
        inputs.config_file = self.config.clone();
        if let Some(dir) = &self.data_dir {
            inputs.flags.push((
                "data_dir".into(),
                dir.display().to_string(),
                "--data-dir".into(),
            ));
        }
        for item in &self.set {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("--set {item}: expected KEY=VALUE"))?;
            inputs.flags.push((
                key.trim().into(),
                value.into(),
                format!("--set {}", key.trim()),
            ));
        }
        if let Some(listen) = listen {
            inputs
                .flags
                .push(("listen".into(), listen.into(), "--listen".into()));
        }
        Ok(inputs)
    }

    fn load(&self, listen: Option<&str>) -> Result<Config, ExitCode> {
        let inputs = self.inputs(listen).map_err(|e| {
            eprintln!("cairn: {e}");
            ExitCode::from(2)
        })?;
        Config::load(&inputs).map_err(|errors| {
            print_config_errors(&errors);
            ExitCode::from(2)
        })
    }
}

fn print_config_errors(errors: &[ConfigError]) {
    eprintln!("cairn: the configuration has {} problem(s):", errors.len());
    for e in errors {
        eprintln!("  - {e}");
    }
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// nDCG@10, recall@100 and MRR@10 of each search mode over a dataset in BEIR layout
    /// (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`), loaded into a throwaway store with
    /// the configured embedding model.
    Retrieval {
        /// The dataset's directory.
        #[arg(long, value_name = "DIR")]
        dataset: std::path::PathBuf,
        /// Modes to score (comma-separated). Default: all three.
        #[arg(long, value_delimiter = ',', value_name = "MODE")]
        modes: Vec<String>,
        /// Score only the first N judged queries.
        #[arg(long, value_name = "N")]
        max_queries: Option<usize>,
        /// Load the corpus into this database (it must be empty) instead of a temporary SQLite file.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Serve(args) => serve(&cli, args).await,
        Command::Migrate { dry_run } => migrate(&cli, *dry_run).await,
        Command::Config(ConfigCommand::Check { production }) => config_check(&cli, *production),
        Command::Config(ConfigCommand::Show { json }) => config_show(&cli, *json),
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", config::reference_markdown());
            ExitCode::SUCCESS
        }
        Command::Secrets(SecretsCommand::Generate { out, force }) => secrets_generate(out, *force),
        Command::Admin(cmd) => admin(&cli, cmd).await,
        Command::Worker { workers } => worker(&cli, *workers).await,
        Command::Openapi => {
            let (_, table) = crate::http::api_routes().into_parts();
            let doc = crate::http::openapi::document(&table);
            match serde_json::to_string_pretty(&doc) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cairn: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Import {
            paths,
            collection,
            as_email,
            no_wait,
        } => import(&cli, paths, collection, as_email.as_deref(), *no_wait).await,
        Command::Eval(EvalCommand::Retrieval {
            dataset,
            modes,
            max_queries,
            database_url,
            json,
        }) => {
            eval_retrieval(
                &cli,
                dataset,
                modes,
                *max_queries,
                database_url.as_deref(),
                *json,
            )
            .await
        }
        Command::Doctor { json } => match cli.load(None) {
            Ok(config) => crate::doctor::run(config, *json).await,
            Err(code) => code,
        },
        Command::Backup(cmd) => match cli.load(None) {
            Ok(config) => {
                // Its stdout is the result (`--json`); logs go to stderr.
                crate::telemetry::init_stderr(config.log_format, &config.log_level);
                crate::backup::cli::run(config, cmd).await
            }
            Err(code) => code,
        },
        Command::Health { url, timeout_secs } => health(&cli, url.as_deref(), *timeout_secs).await,
        Command::Version { json } => {
            version(*json);
            ExitCode::SUCCESS
        }
    }
}

async fn serve(cli: &Cli, args: &ServeArgs) -> ExitCode {
    // Handle SIGHUP from the very start (`systemctl reload` during migrations must not stop
    // the server); `run_until` gives it its meaning. Tokio keeps the handler installed.
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let config = match cli.load(args.listen.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(config.log_format, &config.log_level);
    for relaxed in app::development_banner(&config) {
        tracing::warn!(
            "development mode relaxes: {relaxed} (production would refuse to start; CAIRN_ENV=production enforces)"
        );
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("cairn: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = match app.local_addr() {
        Ok(addr) => display_url(addr, app.is_tls()),
        Err(_) => String::from("(unknown address)"),
    };
    tracing::info!(url = %url, version = env!("CARGO_PKG_VERSION"), "Cairn is listening on {url}");
    match app.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
    }
}

async fn worker(cli: &Cli, workers: Option<usize>) -> ExitCode {
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(config.log_format, &config.log_level);
    let n = workers.unwrap_or(config.ingest.workers).max(1);
    let (state, _) = match app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(workers = n, "ingestion workers running");
    let workers = crate::documents::worker::spawn(&state, n);
    let scheduler = crate::documents::worker::spawn_scheduler(&state);
    shutdown_signal().await;
    scheduler.abort();
    workers.stop(&state).await;
    state.store.db().close().await;
    ExitCode::SUCCESS
}

async fn eval_retrieval(
    cli: &Cli,
    dataset: &std::path::Path,
    modes: &[String],
    max_queries: Option<usize>,
    database_url: Option<&str>,
    json: bool,
) -> ExitCode {
    use crate::search::{eval, Mode};
    let mut config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut chosen = Vec::new();
    for m in modes {
        match m.trim() {
            "hybrid" => chosen.push(Mode::Hybrid),
            "keyword" => chosen.push(Mode::Keyword),
            "semantic" => chosen.push(Mode::Semantic),
            other => {
                eprintln!("cairn: unknown mode `{other}` (hybrid, keyword, semantic)");
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = Mode::ALL.to_vec();
    }
    crate::telemetry::init(LogFormat::Pretty, "warn");
    let data = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cairn: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A throwaway workspace: never the configured database, cache or files.
    config.data_dir = data.path().to_owned();
    config.database_url = database_url.map(crate::config::Secret::new);
    config.redis_url = None;
    config.storage.backend = crate::config::StorageBackend::Local;
    let result = async {
        let data_set = eval::Dataset::load(dataset, max_queries)?;
        eprintln!(
            "dataset: {} documents, {} judged queries",
            data_set.corpus.len(),
            data_set.queries.len()
        );
        let (state, _) = crate::app::build_state(config).await?;
        let (user, docs) = eval::load_corpus(&state, &data_set, true).await?;
        let mut scores = Vec::new();
        for mode in chosen {
            match eval::score_mode(&state, &state.store, user, &docs, &data_set, mode).await? {
                Some(s) => scores.push(s),
                None => eprintln!(
                    "{}: skipped (no embedding model is configured)",
                    mode.as_str()
                ),
            }
        }
        state.store.db().close().await;
        anyhow::Ok(scores)
    }
    .await;
    match result {
        Ok(scores) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&scores).unwrap_or_default()
                );
            } else {
                print!("{}", eval::table(&scores));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn import(
    cli: &Cli,
    paths: &[std::path::PathBuf],
    collection: &str,
    as_email: Option<&str>,
    no_wait: bool,
) -> ExitCode {
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(LogFormat::Pretty, "warn");
    let workers = config.ingest.workers.max(1);
    let (state, _) = match app::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run_import(&state, paths, collection, as_email, no_wait, workers).await;
    state.store.db().close().await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_import(
    state: &crate::AppState,
    paths: &[std::path::PathBuf],
    collection: &str,
    as_email: Option<&str>,
    no_wait: bool,
    workers: usize,
) -> anyhow::Result<bool> {
    use crate::documents::import;
    let user = match as_email {
        Some(e) => {
            let email =
                crate::accounts::email::normalize(e).map_err(|e| anyhow::anyhow!(e.message()))?;
            state.store.user_by_email(&email).await?
        }
        None => state.store.owner().await?,
    }
    .ok_or_else(|| {
        anyhow::anyhow!("no such account (create the owner first: cairn admin create)")
    })?;
    anyhow::ensure!(
        user.state == "active",
        "the account {} is not active",
        user.email
    );
    let collection_id = import::collection_named(state, user.id, collection).await?;
    let files = import::files(paths);
    let bar = indicatif::ProgressBar::new(files.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("queueing");
    let report = import::queue_files(state, user.id, collection_id, &files, |_| bar.inc(1)).await?;
    bar.finish_and_clear();
    println!(
        "{} new, {} already in {collection:?}, {} refused",
        report.queued.len(),
        report.skipped_existing,
        report.refused.len()
    );
    for (path, why) in &report.refused {
        println!("  refused {}: {why}", path.display());
    }
    if no_wait || report.queued.is_empty() {
        return Ok(report.refused.is_empty());
    }
    let running = crate::documents::worker::spawn(state, workers);
    let bar = indicatif::ProgressBar::new(report.queued.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("ingesting");
    let (done, failed) = import::wait_for(state, user.id, &report.queued, |done, failed| {
        bar.set_position((done + failed) as u64)
    })
    .await?;
    running.stop(state).await;
    bar.finish_and_clear();
    println!("{done} ingested, {failed} failed");
    Ok(failed == 0 && report.refused.is_empty())
}

/// The URL to print for a listen address: a wildcard bind is reachable on loopback.
fn display_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{ip}:{}", addr.port())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn migrate(cli: &Cli, dry_run: bool) -> ExitCode {
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(LogFormat::Pretty, "warn");
    if let Err(e) = crate::datadir::prepare(&config.data_dir) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    let db = match app::connect_db(&config).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = cairn_store::redact_url(&config.effective_database_url());
    let status = match cairn_store::migrate::status(&db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: cannot read the schema version: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "database {url} ({}): schema version {}, this binary knows {}",
        db.backend().name(),
        status.current,
        status.latest
    );
    if status.current > status.latest {
        eprintln!(
            "cairn: {}",
            cairn_store::StoreError::SchemaTooNew {
                database: status.current,
                binary: status.latest
            }
        );
        return ExitCode::FAILURE;
    }
    if dry_run {
        if status.pending.is_empty() {
            println!("up to date: nothing would run");
        }
        for m in &status.pending {
            println!("would apply {:04} {}", m.version, m.description);
        }
        return ExitCode::SUCCESS;
    }
    match cairn_store::migrate::run(&db).await {
        Ok(applied) => {
            if applied.is_empty() {
                println!("up to date: nothing to apply");
            }
            for m in applied {
                println!("applied {:04} {}", m.version, m.description);
            }
            db.close().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn: migration failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn admin(cli: &Cli, cmd: &AdminCommand) -> ExitCode {
    use crate::accounts::admin_cli;
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(LogFormat::Pretty, "warn");
    if let Err(e) = crate::datadir::prepare(&config.data_dir) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    let store = match app::open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cmd {
        AdminCommand::Create {
            email, name, role, ..
        } => match admin_cli::read_password_stdin() {
            Ok(pw) => {
                let role = role.as_deref().and_then(|r| r.parse().ok());
                admin_cli::create(&store, &config, email, name.as_deref(), role, pw)
                    .await
                    .map(|(role, email)| format!("created {role} {email}"))
            }
            Err(e) => Err(e),
        },
        AdminCommand::ResetPassword { email, .. } => match admin_cli::read_password_stdin() {
            Ok(pw) => admin_cli::reset_password(&store, &config, email, pw)
                .await
                .map(|email| format!("password of {email} reset; all of its sessions ended")),
            Err(e) => Err(e),
        },
    };
    store.db().close().await;
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(cli: &Cli, force_production: bool) -> ExitCode {
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(_) => return ExitCode::FAILURE,
    };
    let mut problems: Vec<String> = keys::validate_provided(&config);
    let production_problems = config::production::problems(&config);
    let strict = force_production || config.mode == Mode::Production;
    if strict {
        problems.extend(production_problems.iter().map(|p| p.to_string()));
    }
    if let Some(file) = config.file() {
        println!("configuration file: {}", file.display());
    }
    if problems.is_empty() {
        println!(
            "configuration OK ({})",
            if strict {
                "production checks applied"
            } else {
                "development"
            }
        );
        if !strict && !production_problems.is_empty() {
            println!("production mode would refuse:");
            for p in &production_problems {
                println!("  - {p}");
            }
        }
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "cairn: the configuration has {} problem(s):",
            problems.len()
        );
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::FAILURE
    }
}

fn config_show(cli: &Cli, json: bool) -> ExitCode {
    let config = match cli.load(None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let entries = config.entries();
    if json {
        match serde_json::to_string_pretty(&entries) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cairn: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let key_w = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    let val_w = entries
        .iter()
        .map(|e| e.value.chars().count().max(2))
        .max()
        .unwrap_or(0)
        .min(48);
    for e in entries {
        let value = if e.value.is_empty() {
            "—"
        } else {
            e.value.as_str()
        };
        println!("{:key_w$}  {:val_w$}  {}", e.key, value, e.source);
    }
    ExitCode::SUCCESS
}

fn secrets_generate(out: &Path, force: bool) -> ExitCode {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode_owner_only()
        .create(out)
    {
        eprintln!("cairn: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let existing: Vec<_> = keys::ALL_FILES
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !force {
        eprintln!(
            "cairn: {} already exist(s) in {}; pass --force to replace (tokens, cookies and encrypted data made with the old keys stop working)",
            existing.len(),
            out.display()
        );
        return ExitCode::FAILURE;
    }
    for name in keys::ALL_FILES {
        let path = out.join(name);
        let written = keys::generate(name).and_then(|text| {
            if force {
                let _ = std::fs::remove_file(&path);
            }
            keys::write_owner_only(&path, text.as_bytes())
        });
        if let Err(e) = written {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "wrote {} secrets to {} (owner-only). Point Cairn at them with:",
        keys::ALL_FILES.len(),
        out.display()
    );
    for (name, setting) in
        keys::ALL_FILES
            .iter()
            .zip(["signing_key", "data_key", "cookie_key", "metrics.token"])
    {
        if let Some(var) = config::spec::find(setting).and_then(|s| s.file_var()) {
            println!("  {var}={}", out.join(name).display());
        }
    }
    ExitCode::SUCCESS
}

trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::DirBuilder {
    fn mode_owner_only(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

async fn health(cli: &Cli, url: Option<&str>, timeout_secs: u64) -> ExitCode {
    let url = match url {
        Some(u) => u.to_owned(),
        None => {
            let (listen, tls) = cli
                .load(None)
                .map(|c| (c.listen, c.tls.enabled()))
                .unwrap_or_else(|_| (std::net::SocketAddr::from(([127, 0, 0, 1], 8080)), false));
            format!("{}/api/health", display_url(listen, tls))
        }
    };
    match tokio::time::timeout(Duration::from_secs(timeout_secs), crate::probe::get(&url)).await {
        Ok(Ok((status, body))) => {
            println!("{body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                eprintln!("cairn: {url} answered {status}");
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("cairn: cannot reach {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("cairn: {url} did not answer within {timeout_secs} s");
            ExitCode::FAILURE
        }
    }
}

fn version(json: bool) {
    use cairn_store::{migrate::latest_version, Backend};
    if json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "schema": {
                "sqlite": latest_version(Backend::Sqlite),
                "postgres": latest_version(Backend::Postgres),
            }
        });
        println!("{v}");
    } else {
        println!("cairn {}", env!("CARGO_PKG_VERSION"));
    }
}
