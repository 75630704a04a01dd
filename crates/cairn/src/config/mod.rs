//! Cairn's configuration: one typed [`Config`], loaded in layers (defaults < TOML file <
//! `CAIRN_*` environment < `CAIRN_*_FILE` secrets < flags) and passed by value into the
//! application. Never a global.
//!
//! - [`spec`] — the table of every setting (the single source of the reference docs).
//! - [`load`] — reading the layers into text values that remember their source.
//! - [`production`] — the checks production mode refuses to start without.
//! - [`secret`] — the redacting [`Secret`] wrapper.

pub mod load;
pub mod production;
pub mod secret;
pub mod spec;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

pub use load::{ConfigError, Inputs, Source};
pub use secret::Secret;
use spec::{Kind, SETTINGS};

/// Development relaxes safety checks; production enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub connect_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Exact origins; `any` is set instead when the list held `*`.
    pub allowed_origins: Vec<String>,
    pub any_origin: bool,
    pub allow_credentials: bool,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub allow_networks: Vec<IpNet>,
    pub token: Option<Secret>,
    pub public: bool,
}

/// Who may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Closed,
    Invite,
    Approval,
    Open,
}

/// Who must use two-factor sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require2fa {
    Off,
    Admins,
    Everyone,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub registration: Registration,
    pub require_2fa: Require2fa,
    pub access_token_ttl: Duration,
    pub session_ttl: Duration,
    pub password_min_length: usize,
    pub password_require_classes: bool,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    /// 0: one per CPU core.
    pub hash_concurrency: usize,
    pub sign_in_free_failures: u32,
    /// Zero: no standing cache.
    pub standing_cache_ttl: Duration,
    pub standing_cache_entries: usize,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub general_per_minute: u32,
    pub auth_per_minute: u32,
    pub account_per_minute: u32,
    pub max_tracked_keys: usize,
}

/// Where uploaded files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Local blobs directory; `None`: `<data_dir>/blobs`.
    pub path: Option<PathBuf>,
    pub s3_bucket: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    pub s3_allow_http: bool,
}

/// How Cairn serves HTTPS itself (`tls.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP: TLS ends at a reverse proxy, or nowhere.
    Off,
    SelfSigned,
    Files,
    Acme,
}

/// How an ACME server checks that this server answers for its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token over plain HTTP on port 80 (needs `tls.redirect_listen`).
    Http01,
    /// A special certificate on the HTTPS port itself.
    TlsAlpn01,
}

/// Which TLS versions are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// The names and addresses certificates are for. Empty: the `public_url` host.
    pub hosts: Vec<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub reload_check: Duration,
    pub min_version: TlsMinVersion,
    /// The plain-HTTP listener that only redirects (and answers HTTP-01 challenges).
    pub redirect_listen: Option<SocketAddr>,
    pub hsts_max_age_secs: u64,
    pub handshake_timeout: Duration,
    pub self_signed_days: u32,
    pub renew_before_days: u32,
    pub acme_directory: String,
    pub acme_email: Option<String>,
    /// A PEM root certificate trusted for the ACME server (private or test CAs).
    pub acme_ca_root: Option<PathBuf>,
    pub acme_challenge: AcmeChallenge,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Off
    }
}

/// Where backups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupDestination {
    Dir,
    S3,
}

#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// `None`: no scheduled backups.
    pub schedule: Option<croner::Cron>,
    pub destination: BackupDestination,
    /// `None`: `<data_dir>/backups`.
    pub dir: Option<PathBuf>,
    pub s3_bucket: Option<String>,
    pub s3_prefix: String,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub compression_level: i32,
}

/// What maintenance deletes, and how often it runs.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub conversations: Option<Duration>,
    pub usage: Option<Duration>,
    pub maintenance_every: Duration,
}

/// Which file types an upload may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadProfile {
    Safe,
    Office,
    All,
}

#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub max_file_bytes: u64,
    /// 0: no quota.
    pub user_quota_bytes: u64,
    pub profile: UploadProfile,
    /// When not empty, exactly these kinds (overrides the profile).
    pub allowed_kinds: Vec<String>,
    pub zip_max_entries: usize,
    pub zip_max_uncompressed_bytes: u64,
    pub zip_max_ratio: u64,
    /// Most time one upload request may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Ingestion workers inside `cairn serve` (0: run them with `cairn worker` instead).
    pub workers: usize,
    pub job_timeout_secs: u32,
    pub max_attempts: u32,
    pub parse_timeout: Duration,
    pub max_text_bytes: usize,
    pub chunk_tokens: usize,
    pub chunk_overlap_tokens: usize,
    /// `None`: soft-deleted documents are purged at once.
    pub deleted_retention: Option<Duration>,
}

/// Where vectors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingProvider {
    None,
    Local,
    OpenAi,
}

#[derive(Debug, Clone)]
pub struct EmbeddingsConfig {
    pub provider: EmbeddingProvider,
    pub model: String,
    pub model_dir: PathBuf,
    pub url: Option<Url>,
    pub api_key: Option<Secret>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub max_tokens: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub default_top_k: u32,
    pub max_top_k: u32,
    pub max_query_chars: usize,
    pub ranking: crate::search::Ranking,
    /// Keep the SQLite search index in memory (`search.memory_index`).
    pub memory_index: bool,
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub default_model: String,
    pub allow_mock: bool,
    pub max_concurrent_streams: usize,
    pub max_streams_per_user: usize,
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub retries: u32,
    pub max_message_chars: usize,
    pub max_answer_chars: usize,
    pub sources: u32,
    pub min_similarity: f64,
    pub history_messages: u32,
    pub currency: String,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub check_cache: Duration,
    pub check_timeout: Duration,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: Option<Url>,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    pub redis_key_prefix: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub signing_key: Option<Secret>,
    pub data_key: Option<Secret>,
    pub cookie_key: Option<Secret>,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub cors: CorsConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub storage: StorageConfig,
    pub uploads: UploadConfig,
    pub ingest: IngestConfig,
    pub embeddings: EmbeddingsConfig,
    pub search: SearchConfig,
    pub chat: ChatConfig,
    /// `None`: keep audit entries forever.
    pub audit_retention: Option<Duration>,
    pub retention: RetentionConfig,
    pub backup: BackupConfig,
    pub tls: TlsConfig,
    raw: load::RawValues,
}

/// One line of `cairn config show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub key: &'static str,
    pub value: String,
    pub source: String,
}

impl Config {
    /// Load and validate; every problem is returned, not just the first.
    pub fn load(inputs: &Inputs) -> Result<Config, Vec<ConfigError>> {
        let (raw, layer_errors) = load::read_layers(inputs);
        let mut p = Parser {
            raw: &raw,
            errors: layer_errors,
        };
        let mode = match p.text("env") {
            "production" => Mode::Production,
            _ => Mode::Development,
        };
        let log_format = match p.text("log_format") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Auto,
        };
        let log_level = p.text("log_level").to_owned();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            p.fail("log_level", format!("not a valid log filter: {e}"));
        }
        let data_dir = PathBuf::from(p.text("data_dir"));
        let config = Config {
            mode,
            data_dir: data_dir.clone(),
            listen: p
                .parse("listen", "an address like 127.0.0.1:8080")
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: p.public_url(),
            database_url: p.database_url(),
            redis_url: p.redis_url(),
            redis_key_prefix: p.text("redis_key_prefix").to_owned(),
            log_format,
            log_level,
            signing_key: p.secret("signing_key"),
            data_key: p.secret("data_key"),
            cookie_key: p.secret("cookie_key"),
            database: DatabaseConfig {
                max_connections: p.number("database.max_connections", 1, 10_000),
                acquire_timeout: Duration::from_secs(p.number(
                    "database.acquire_timeout_secs",
                    1,
                    3600,
                )),
                connect_attempts: p.number("database.connect_attempts", 1, 1000),
            },
            http: HttpConfig {
                request_timeout: Duration::from_secs(p.number(
                    "http.request_timeout_secs",
                    1,
                    86_400,
                )),
                body_limit_bytes: p.number("http.body_limit_bytes", 1024, 1 << 40),
                shutdown_grace: Duration::from_secs(p.number("http.shutdown_grace_secs", 0, 3600)),
                trusted_proxies: p.networks("http.trusted_proxies"),
            },
            cors: p.cors(),
            metrics: MetricsConfig {
                enabled: p.bool("metrics.enabled"),
                allow_networks: p.networks("metrics.allow_networks"),
                token: p.secret("metrics.token"),
                public: p.bool("metrics.public"),
            },
            health: HealthConfig {
                check_cache: Duration::from_millis(p.number("health.check_cache_ms", 0, 3_600_000)),
                check_timeout: Duration::from_millis(p.number(
                    "health.check_timeout_ms",
                    10,
                    600_000,
                )),
            },
            auth: AuthConfig {
                require_2fa: match p.text("auth.require_2fa") {
                    "admins" => Require2fa::Admins,
                    "everyone" => Require2fa::Everyone,
                    _ => Require2fa::Off,
                },
                registration: match p.text("auth.registration") {
                    "closed" => Registration::Closed,
                    "invite" => Registration::Invite,
                    "open" => Registration::Open,
                    _ => Registration::Approval,
                },
                access_token_ttl: Duration::from_secs(p.number(
                    "auth.access_token_ttl_secs",
                    30,
                    86_400,
                )),
                session_ttl: Duration::from_secs(p.number(
                    "auth.session_ttl_secs",
                    300,
                    31_536_000,
                )),
                password_min_length: p.number("auth.password_min_length", 8, 128),
                password_require_classes: p.bool("auth.password_require_classes"),
                argon2_memory_kib: p.number("auth.argon2_memory_kib", 8, 4_194_304),
                argon2_iterations: p.number("auth.argon2_iterations", 1, 100),
                hash_concurrency: p.number("auth.hash_concurrency", 0, 1024),
                sign_in_free_failures: p.number("auth.sign_in_free_failures", 1, 1000),
                standing_cache_ttl: Duration::from_secs(p.number(
                    "auth.standing_cache_secs",
                    0,
                    300,
                )),
                standing_cache_entries: p.number("auth.standing_cache_entries", 1, 10_000_000),
            },
            storage: StorageConfig {
                backend: match p.text("storage.backend") {
                    "s3" => StorageBackend::S3,
                    _ => StorageBackend::Local,
                },
                path: p.optional("storage.path").map(PathBuf::from),
                s3_bucket: p.optional("storage.s3_bucket"),
                s3_endpoint: p.optional("storage.s3_endpoint"),
                s3_region: p.text("storage.s3_region").to_owned(),
                s3_access_key_id: p.optional("storage.s3_access_key_id"),
                s3_secret_access_key: p.secret("storage.s3_secret_access_key"),
                s3_allow_http: p.bool("storage.s3_allow_http"),
            },
            uploads: UploadConfig {
                max_file_bytes: p.number("uploads.max_file_bytes", 1, 1 << 40),
                user_quota_bytes: p.number("uploads.user_quota_bytes", 0, 1 << 50),
                profile: match p.text("uploads.profile") {
                    "safe" => UploadProfile::Safe,
                    "all" => UploadProfile::All,
                    _ => UploadProfile::Office,
                },
                allowed_kinds: p.kinds("uploads.allowed_kinds"),
                zip_max_entries: p.number("uploads.zip_max_entries", 1, 1_000_000),
                zip_max_uncompressed_bytes: p.number(
                    "uploads.zip_max_uncompressed_bytes",
                    1024,
                    1 << 40,
                ),
                zip_max_ratio: p.number("uploads.zip_max_ratio", 1, 100_000),
                timeout: Duration::from_secs(p.number("uploads.timeout_secs", 1, 86_400)),
            },
            embeddings: {
                let provider = match p.text("embeddings.provider") {
                    "local" => EmbeddingProvider::Local,
                    "openai" => EmbeddingProvider::OpenAi,
                    _ => EmbeddingProvider::None,
                };
                let model = p.text("embeddings.model").trim().to_owned();
                let model_dir = match p.optional("embeddings.model_dir") {
                    Some(d) => PathBuf::from(d),
                    None => data_dir.join("models").join(&model),
                };
                let url = p.optional("embeddings.url");
                let url = match url.as_deref().map(Url::parse) {
                    None => None,
                    Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
                    Some(_) => {
                        p.fail(
                            "embeddings.url",
                            "expected an http(s) URL such as https://api.openai.com/v1".into(),
                        );
                        None
                    }
                };
                if provider == EmbeddingProvider::OpenAi && url.is_none() {
                    p.fail(
                        "embeddings.url",
                        "`embeddings.provider = \"openai\"` needs the endpoint's base URL".into(),
                    );
                }
                if provider != EmbeddingProvider::None && model.is_empty() {
                    p.fail("embeddings.model", "name the embedding model".into());
                }
                EmbeddingsConfig {
                    provider,
                    model,
                    model_dir,
                    url,
                    api_key: p.secret("embeddings.api_key"),
                    batch_size: p.number("embeddings.batch_size", 1, 4096),
                    concurrency: p.number("embeddings.concurrency", 1, 64),
                    max_tokens: p.number("embeddings.max_tokens", 8, 8192),
                    timeout: Duration::from_secs(p.number("embeddings.timeout_secs", 1, 3600)),
                }
            },
            search: {
                let max_top_k: u32 = p.number("search.max_top_k", 1, 1000);
                SearchConfig {
                    default_top_k: p
                        .number::<u32>("search.default_top_k", 1, 1000)
                        .min(max_top_k),
                    max_top_k,
                    max_query_chars: p.number("search.max_query_chars", 1, 100_000),
                    memory_index: p.bool("search.memory_index"),
                    ranking: crate::search::Ranking {
                        rrf_k: p.number::<u32>("search.rrf_k", 1, 10_000).into(),
                        keyword_weight: p.decimal("search.keyword_weight", 100.0),
                        semantic_weight: p.decimal("search.semantic_weight", 100.0),
                        candidates: p.number("search.candidates", 1, 10_000),
                        snippet_chars: p.number("search.snippet_chars", 20, 10_000),
                        ..crate::search::Ranking::default()
                    },
                }
            },
            chat: {
                let currency = p.text("chat.currency").trim().to_ascii_uppercase();
                if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
                    p.fail(
                        "chat.currency",
                        "expected a three-letter ISO 4217 code such as USD or EUR".into(),
                    );
                }
                let default_model = p.text("chat.default_model").trim().to_owned();
                if default_model.is_empty() {
                    p.fail(
                        "chat.default_model",
                        "name a model (e.g. `extractive`)".into(),
                    );
                }
                ChatConfig {
                    default_model,
                    allow_mock: p.bool("chat.allow_mock"),
                    max_concurrent_streams: p.number("chat.max_concurrent_streams", 1, 100_000),
                    max_streams_per_user: p.number("chat.max_streams_per_user", 1, 10_000),
                    heartbeat: Duration::from_secs(p.number("chat.heartbeat_secs", 1, 3600)),
                    connect_timeout: Duration::from_secs(p.number(
                        "chat.connect_timeout_secs",
                        1,
                        600,
                    )),
                    idle_timeout: Duration::from_secs(p.number("chat.idle_timeout_secs", 1, 3600)),
                    retries: p.number("chat.retries", 0, 10),
                    max_message_chars: p.number("chat.max_message_chars", 1, 10_000_000),
                    max_answer_chars: p.number("chat.max_answer_chars", 100, 100_000_000),
                    sources: p.number("chat.sources", 0, 100),
                    min_similarity: p.decimal("chat.min_similarity", 1.0),
                    history_messages: p.number("chat.history_messages", 0, 1000),
                    currency,
                }
            },
            ingest: IngestConfig {
                workers: p.number("ingest.workers", 0, 64),
                job_timeout_secs: p.number("ingest.job_timeout_secs", 1, 86_400),
                max_attempts: p.number("ingest.max_attempts", 1, 100),
                parse_timeout: Duration::from_secs(p.number("ingest.parse_timeout_secs", 1, 3600)),
                max_text_bytes: p.number("ingest.max_text_bytes", 1024, 1 << 34),
                chunk_tokens: p.number("ingest.chunk_tokens", 32, 8192),
                chunk_overlap_tokens: p.number("ingest.chunk_overlap_tokens", 0, 4096),
                deleted_retention: match p.number::<u64>(
                    "documents.deleted_retention_days",
                    0,
                    36_500,
                ) {
                    0 => None,
                    days => Some(Duration::from_secs(days * 86_400)),
                },
            },
            audit_retention: match p.number::<u64>("audit.retention_days", 0, 36_500) {
                0 => None,
                days => Some(Duration::from_secs(days * 86_400)),
            },
            retention: RetentionConfig {
                conversations: match p.number::<u64>("retention.conversations_days", 0, 36_500) {
                    0 => None,
                    days => Some(Duration::from_secs(days * 86_400)),
                },
                usage: match p.number::<u64>("retention.usage_days", 0, 36_500) {
                    0 => None,
                    days => Some(Duration::from_secs(days * 86_400)),
                },
                maintenance_every: Duration::from_secs(
                    60 * p.number::<u64>("maintenance.every_minutes", 1, 10_080),
                ),
            },
            backup: BackupConfig {
                schedule: p.schedule("backup.schedule"),
                destination: match p.text("backup.destination") {
                    "s3" => BackupDestination::S3,
                    _ => BackupDestination::Dir,
                },
                dir: p.optional("backup.dir").map(PathBuf::from),
                s3_bucket: p.optional("backup.s3_bucket"),
                s3_prefix: p.text("backup.s3_prefix").to_owned(),
                keep_daily: p.number("backup.keep_daily", 0, 10_000),
                keep_weekly: p.number("backup.keep_weekly", 0, 10_000),
                keep_monthly: p.number("backup.keep_monthly", 0, 10_000),
                compression_level: p.number("backup.compression_level", 1, 19),
            },
            tls: p.tls(),
            rate_limit: RateLimitConfig {
                enabled: p.bool("rate_limit.enabled"),
                general_per_minute: p.number("rate_limit.general_per_minute", 1, 1_000_000),
                auth_per_minute: p.number("rate_limit.auth_per_minute", 1, 1_000_000),
                account_per_minute: p.number("rate_limit.account_per_minute", 1, 1_000_000),
                max_tracked_keys: p.number("rate_limit.max_tracked_keys", 1000, 100_000_000),
            },
            raw: raw.clone(),
        };
        if p.errors.is_empty() {
            Ok(config)
        } else {
            Err(p.errors)
        }
    }

    /// Defaults only, with `data_dir` set: the starting point for tests and tools.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Result<Config, Vec<ConfigError>> {
        let data_dir: PathBuf = data_dir.into();
        Config::load(&Inputs {
            flags: vec![(
                "data_dir".into(),
                data_dir.display().to_string(),
                "--data-dir".into(),
            )],
            ..Inputs::default()
        })
    }

    /// The configuration file that was read, if any.
    pub fn file(&self) -> Option<&PathBuf> {
        self.raw.file.as_ref()
    }

    /// The layer that set `key`.
    pub fn source_of(&self, key: &str) -> Source {
        self.raw.get(key).1.clone()
    }

    /// Every setting with its effective value (secrets redacted) and source.
    pub fn entries(&self) -> Vec<Entry> {
        SETTINGS
            .iter()
            .map(|s| {
                let (value, source) = self.raw.get(s.key);
                let value = match s.kind {
                    Kind::Secret if value.is_empty() => String::new(),
                    Kind::Secret => "<redacted>".to_owned(),
                    Kind::CredentialUrl => cairn_store::redact_url(value),
                    _ => value.to_owned(),
                };
                Entry {
                    key: s.key,
                    value,
                    source: source.to_string(),
                }
            })
            .collect()
    }

    /// The SQLite file used when no database URL is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("cairn.db")
    }

    /// The database URL in effect (the SQLite default spelled out).
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.sqlite_path().display()),
        }
    }

    /// Whether browsers reach Cairn over HTTPS (so cookies are `Secure` and HSTS is sent).
    pub fn served_over_https(&self) -> bool {
        self.tls.enabled()
            || self
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https")
    }

    /// The names certificates are for: `tls.hosts`, else the `public_url` host, else
    /// `localhost` (self-signed only).
    pub fn tls_hosts(&self) -> Vec<String> {
        if !self.tls.hosts.is_empty() {
            return self.tls.hosts.clone();
        }
        match self.public_url.as_ref().and_then(|u| u.host()) {
            Some(url::Host::Domain(name)) => vec![name.to_ascii_lowercase()],
            Some(url::Host::Ipv4(ip)) => vec![ip.to_string()],
            Some(url::Host::Ipv6(ip)) => vec![ip.to_string()],
            None => Vec::new(),
        }
    }
}

struct Parser<'a> {
    raw: &'a load::RawValues,
    errors: Vec<ConfigError>,
}

impl Parser<'_> {
    fn text(&mut self, key: &str) -> &str {
        let raw = self.raw;
        let (value, source) = raw.get(key);
        if let Some(setting) = spec::find(key) {
            if let Kind::Choice(options) = setting.kind {
                if !options.contains(&value) {
                    let source = source.clone();
                    self.errors.push(ConfigError {
                        key: key.into(),
                        source,
                        message: format!("`{value}` is not one of: {}", options.join(", ")),
                    });
                }
            }
        }
        value
    }

    fn fail(&mut self, key: &str, message: String) {
        let source = self.raw.get(key).1.clone();
        self.errors.push(ConfigError {
            key: key.into(),
            source,
            message,
        });
    }

    fn parse<T: FromStr>(&mut self, key: &str, what: &str) -> Option<T> {
        let value = self.raw.get(key).0;
        match value.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail(key, format!("expected {what}, got `{value}`"));
                None
            }
        }
    }

    fn number<T: TryFrom<u64> + Default>(&mut self, key: &str, min: u64, max: u64) -> T {
        let value = self.raw.get(key).0;
        match value.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => T::try_from(n).unwrap_or_default(),
            Ok(n) => {
                self.fail(key, format!("{n} is out of range: use {min} to {max}"));
                T::default()
            }
            Err(_) => {
                self.fail(key, format!("expected a whole number, got `{value}`"));
                T::default()
            }
        }
    }

    fn bool(&mut self, key: &str) -> bool {
        match self.raw.get(key).0.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => {
                let message = format!("expected true or false, got `{other}`");
                self.fail(key, message);
                false
            }
        }
    }

    /// A number from 0 to `max`, fractions allowed.
    fn decimal(&mut self, key: &str, max: f64) -> f64 {
        let value = self.raw.get(key).0;
        match value.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && (0.0..=max).contains(&n) => n,
            Ok(n) => {
                self.fail(key, format!("{n} is out of range: use 0 to {max}"));
                0.0
            }
            Err(_) => {
                self.fail(key, format!("expected a number, got `{value}`"));
                0.0
            }
        }
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.raw
            .get(key)
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A text setting where empty means "not set".
    /// A cron expression (empty or `off`: none).
    fn schedule(&mut self, key: &str) -> Option<croner::Cron> {
        let text = self.text(key).trim().to_owned();
        if text.is_empty() || text == "off" {
            return None;
        }
        match text.parse::<croner::Cron>() {
            Ok(c) => Some(c),
            Err(e) => {
                self.fail(
                    key,
                    format!("not a cron expression like \"0 3 * * *\" (minute hour day month weekday): {e}"),
                );
                None
            }
        }
    }

    fn optional(&mut self, key: &str) -> Option<String> {
        let value = self.raw.get(key).0.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// A list of document kinds (`pdf`, `docx`, …).
    fn kinds(&mut self, key: &str) -> Vec<String> {
        let items = self.list(key);
        for item in &items {
            if item.parse::<cairn_ingest::Kind>().is_err() {
                self.fail(
                    key,
                    format!(
                        "`{item}` is not a document kind (known: {})",
                        cairn_ingest::Kind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        items
    }

    fn secret(&mut self, key: &str) -> Option<Secret> {
        let value = self.raw.get(key).0;
        (!value.is_empty()).then(|| Secret::new(value))
    }

    fn networks(&mut self, key: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for item in self.list(key) {
            let parsed =
                IpNet::from_str(&item).or_else(|_| IpAddr::from_str(&item).map(IpNet::from));
            match parsed {
                Ok(net) => out.push(net),
                Err(_) => self.fail(
                    key,
                    format!("`{item}` is not a network like 10.0.0.0/8 or an IP address"),
                ),
            }
        }
        out
    }

    fn tls(&mut self) -> TlsConfig {
        let mode = match self.text("tls.mode") {
            "self-signed" => TlsMode::SelfSigned,
            "files" => TlsMode::Files,
            "acme" => TlsMode::Acme,
            _ => TlsMode::Off,
        };
        let cert_file = self.optional("tls.cert_file").map(PathBuf::from);
        let key_file = self.optional("tls.key_file").map(PathBuf::from);
        if mode == TlsMode::Files && (cert_file.is_none() || key_file.is_none()) {
            self.fail(
                "tls.mode",
                "`files` needs both `tls.cert_file` and `tls.key_file`".into(),
            );
        }
        let redirect_listen = match self.optional("tls.redirect_listen") {
            None => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.fail(
                        "tls.redirect_listen",
                        format!("expected an address like 0.0.0.0:80, got `{text}`"),
                    );
                    None
                }
            },
        };
        if mode == TlsMode::Off && redirect_listen.is_some() {
            self.fail(
                "tls.redirect_listen",
                "the redirect listener sends people to HTTPS: it needs `tls.mode` (self-signed, files or acme)".into(),
            );
        }
        let acme_challenge = match self.text("tls.acme_challenge") {
            "http-01" => AcmeChallenge::Http01,
            _ => AcmeChallenge::TlsAlpn01,
        };
        if mode == TlsMode::Acme
            && acme_challenge == AcmeChallenge::Http01
            && redirect_listen.is_none()
        {
            self.fail(
                "tls.acme_challenge",
                "`http-01` is answered on the plain-HTTP listener: set `tls.redirect_listen` (e.g. 0.0.0.0:80), or use `tls-alpn-01`".into(),
            );
        }
        // One spelling per name: DNS names lower-case, addresses as Rust prints them
        // (`2001:db8::1`), so comparisons with certificates are exact.
        let mut hosts: Vec<String> = Vec::new();
        for host in self.list("tls.hosts") {
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => host.to_ascii_lowercase(),
            };
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        if mode == TlsMode::Acme
            && acme_challenge == AcmeChallenge::TlsAlpn01
            && hosts.iter().any(|h| h.parse::<IpAddr>().is_ok())
        {
            self.fail(
                "tls.acme_challenge",
                "IP addresses in `tls.hosts` are validated with `http-01` (set `tls.acme_challenge = \"http-01\"` and `tls.redirect_listen`)".into(),
            );
        }
        for host in &hosts {
            let valid = host.parse::<IpAddr>().is_ok()
                || (!host.is_empty()
                    && host.len() <= 253
                    && host.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                            && !label.starts_with('-')
                            && !label.ends_with('-')
                    }));
            if !valid {
                self.fail(
                    "tls.hosts",
                    format!(
                        "`{host}` is neither a host name like cairn.example.com nor an IP address"
                    ),
                );
            }
        }
        TlsConfig {
            mode,
            hosts,
            cert_file,
            key_file,
            reload_check: Duration::from_secs(self.number("tls.reload_check_secs", 1, 86_400)),
            min_version: match self.text("tls.min_version") {
                "1.3" => TlsMinVersion::V1_3,
                _ => TlsMinVersion::V1_2,
            },
            redirect_listen,
            hsts_max_age_secs: self.number("tls.hsts_max_age_secs", 0, 63_072_000),
            handshake_timeout: Duration::from_secs(self.number(
                "tls.handshake_timeout_secs",
                1,
                300,
            )),
            self_signed_days: self.number("tls.self_signed_days", 2, 3650),
            renew_before_days: self.number("tls.renew_before_days", 1, 365),
            acme_directory: self.text("tls.acme_directory").trim().to_owned(),
            acme_email: self.optional("tls.acme_email"),
            acme_ca_root: self.optional("tls.acme_ca_root").map(PathBuf::from),
            acme_challenge,
        }
    }

    fn public_url(&mut self) -> Option<Url> {
        let value = self.raw.get("public_url").0;
        if value.is_empty() {
            return None;
        }
        match Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            _ => {
                self.fail(
                    "public_url",
                    format!("`{value}` is not an http(s) URL like https://cairn.example.com"),
                );
                None
            }
        }
    }

    fn database_url(&mut self) -> Option<Secret> {
        let url = self.secret("database_url")?;
        if cairn_store::Backend::from_url(url.expose()).is_none() {
            self.fail(
                "database_url",
                format!(
                    "`{}` is neither postgres://… nor sqlite://…",
                    cairn_store::redact_url(url.expose())
                ),
            );
        }
        Some(url)
    }

    fn redis_url(&mut self) -> Option<Secret> {
        let url = self.secret("redis_url")?;
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|p| url.expose().starts_with(p));
        if !scheme_ok {
            self.fail(
                "redis_url",
                format!(
                    "`{}` is not a Redis URL like redis://127.0.0.1:6379",
                    cairn_store::redact_url(url.expose())
                ),
            );
        }
        Some(url)
    }

    fn cors(&mut self) -> CorsConfig {
        let mut allowed_origins = Vec::new();
        let mut any_origin = false;
        for origin in self.list("cors.allowed_origins") {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            match Url::parse(&origin) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.has_host()
                        && u.path() == "/"
                        && !origin.ends_with('/') =>
                {
                    allowed_origins.push(origin)
                }
                _ => self.fail(
                    "cors.allowed_origins",
                    format!("`{origin}` is not an origin like https://app.example.com (no path)"),
                ),
            }
        }
        CorsConfig {
            allowed_origins,
            any_origin,
            allow_credentials: self.bool("cors.allow_credentials"),
        }
    }
}

/// `docs/configuration.md`, generated from the settings table and the production checks.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `cairn config reference`; a test fails when this file and the code differ.\n\n\
         Each setting can be given, from lowest to highest precedence:\n\n\
         1. its default;\n\
         2. in the TOML file (`--config FILE` or `CAIRN_CONFIG`, else `<data_dir>/cairn.toml` when present), \
         with dotted keys as tables (`http.body_limit_bytes` is `body_limit_bytes` under `[http]`);\n\
         3. in the environment as `CAIRN_` + the key in capitals with `.` as `__` \
         (after the conventional names listed, such as `DATABASE_URL`);\n\
         4. for secrets, in a file named by the variable + `_FILE` (as Docker and Kubernetes secrets are mounted);\n\
         5. on the command line: `--set KEY=VALUE`, and `--data-dir`, `--listen` and `--config`.\n\n\
         Unknown keys in the file and unknown `CAIRN_*` variables are errors. `cairn config show` prints \
         the effective value of each setting and where it came from, secrets redacted.\n\n\
         | Setting | Environment | Default | Meaning |\n|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let mut env = format!("`{}`", s.env_var());
        if let Some(f) = s.file_var() {
            env.push_str(&format!("<br>`{f}`"));
        }
        for a in s.aliases {
            env.push_str(&format!("<br>`{a}`"));
        }
        let default = if s.default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", s.default)
        };
        let kind = match s.kind {
            Kind::Choice(options) => format!(" One of: {}.", options.join(", ")),
            Kind::List => " A list (comma-separated in the environment).".to_owned(),
            Kind::Secret => " Secret: never printed.".to_owned(),
            Kind::CredentialUrl => " Printed with its password redacted.".to_owned(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {}{} |\n",
            s.key, env, default, s.help, kind
        ));
    }
    out.push_str(
        "\n## What production mode refuses\n\n\
         With `env = \"production\"` Cairn checks the following before it starts and refuses to start \
         when any fails, listing every problem at once with the setting that fixes it. \
         `cairn config check` runs the same checks. In development, the same list is printed at \
         start as what is relaxed.\n\n\
         | Check | Fix |\n|---|---|\n",
    );
    for check in production::CHECKS {
        out.push_str(&format!("| {} | {} |\n", check.what, check.fix));
    }
    out
}

#[cfg(test)]
mod tests;
