//! The table of every setting Cairn reads: its key, default, kind and meaning. Loading,
//! `cairn config show`, `cairn config reference` (and so `docs/configuration.md`) all come
//! from this one table, so a setting cannot exist without being documented.

/// What values a setting accepts. Parsing into the typed [`Config`](super::Config) happens in
/// `config/mod.rs`; the kind drives the reference table and file-value conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A non-negative whole number.
    Integer,
    /// A non-negative number with an optional fraction (`0.5`).
    Decimal,
    Bool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// A comma-separated list (a TOML array in the file).
    List,
    /// A secret: redacted everywhere, and also read from `<ENV>_FILE`.
    Secret,
    /// A URL that may carry a password: shown with the password redacted.
    CredentialUrl,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Dotted key, as in the TOML file (`http.body_limit_bytes` is `[http] body_limit_bytes`).
    pub key: &'static str,
    /// The default, as text; empty means "not set".
    pub default: &'static str,
    pub kind: Kind,
    /// Conventional variables also accepted, with lower precedence than `CAIRN_*`.
    pub aliases: &'static [&'static str],
    pub help: &'static str,
}

impl Setting {
    /// The `CAIRN_*` variable for this setting: dots become `__`, letters upper-case.
    pub fn env_var(&self) -> String {
        format!("CAIRN_{}", self.key.replace('.', "__").to_ascii_uppercase())
    }

    /// The `*_FILE` variable a secret is also read from.
    pub fn file_var(&self) -> Option<String> {
        self.is_secret().then(|| format!("{}_FILE", self.env_var()))
    }

    pub fn is_secret(&self) -> bool {
        matches!(self.kind, Kind::Secret | Kind::CredentialUrl)
    }
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "env",
        default: "development",
        kind: Kind::Choice(&["development", "production"]),
        aliases: &[],
        help: "`development` relaxes the safety checks and says so at start; `production` refuses to start on unsafe settings, listing every problem at once.",
    },
    Setting {
        key: "data_dir",
        default: "./cairn-data",
        kind: Kind::Text,
        aliases: &[],
        help: "Where Cairn keeps its SQLite database, generated secrets and files. Created owner-only on first start. Its `cairn.toml` is read when no `--config` is given.",
    },
    Setting {
        key: "listen",
        default: "127.0.0.1:8080",
        kind: Kind::Text,
        aliases: &[],
        help: "Address and port the HTTP server binds. Use `0.0.0.0:8080` to accept connections from other machines.",
    },
    Setting {
        key: "public_url",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "The URL people use to reach Cairn, e.g. `https://cairn.example.com`. Used for links and cookies; `https` turns on HSTS. Required in production.",
    },
    Setting {
        key: "database_url",
        default: "",
        kind: Kind::CredentialUrl,
        aliases: &["DATABASE_URL"],
        help: "`postgres://USER:PASSWORD@HOST:PORT/DB` for PostgreSQL, or `sqlite://PATH`. Empty: a SQLite file `cairn.db` in the data directory.",
    },
    Setting {
        key: "redis_url",
        default: "",
        kind: Kind::CredentialUrl,
        aliases: &["REDIS_URL"],
        help: "`redis://HOST:PORT` to share rate limits, revocations and room fan-out between replicas. Empty: kept in process.",
    },
    Setting {
        key: "redis_key_prefix",
        default: "cairn:",
        kind: Kind::Text,
        aliases: &[],
        help: "Prefix of every key Cairn writes to Redis, so several deployments can share one server.",
    },
    Setting {
        key: "log_format",
        default: "auto",
        kind: Kind::Choice(&["auto", "json", "pretty"]),
        aliases: &[],
        help: "`json`: one JSON object per line; `pretty`: for people; `auto`: pretty on a terminal, JSON otherwise.",
    },
    Setting {
        key: "log_level",
        default: "info",
        kind: Kind::Text,
        aliases: &["RUST_LOG"],
        help: "Log filter in `RUST_LOG` syntax, e.g. `info` or `info,cairn::http=debug`.",
    },
    Setting {
        key: "signing_key",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "Ed25519 private key (PKCS#8 PEM) that signs access tokens. Generated into `<data_dir>/secrets/signing_key.pem` when not set.",
    },
    Setting {
        key: "data_key",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "256-bit key (64 hex characters) that encrypts files and stored secrets at rest. Generated into `<data_dir>/secrets/data_key` when not set. Losing it loses the encrypted data: back it up apart from backups.",
    },
    Setting {
        key: "cookie_key",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "Key (at least 32 bytes, as 64+ hex characters) that signs browser cookies and CSRF tokens. Generated into `<data_dir>/secrets/cookie_key` when not set.",
    },
    Setting {
        key: "database.max_connections",
        default: "10",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most database connections this process opens.",
    },
    Setting {
        key: "database.acquire_timeout_secs",
        default: "5",
        kind: Kind::Integer,
        aliases: &[],
        help: "How long a request waits for a free database connection (and each connection attempt may take) before failing.",
    },
    Setting {
        key: "database.connect_attempts",
        default: "5",
        kind: Kind::Integer,
        aliases: &[],
        help: "Attempts to reach the database at start, with backoff from 250 ms up to 5 s between them, before giving up.",
    },
    Setting {
        key: "http.request_timeout_secs",
        default: "30",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most time a request may take to produce its response (a stream's body is not counted). Past it: 503 `request_timeout`.",
    },
    Setting {
        key: "http.body_limit_bytes",
        default: "10485760",
        kind: Kind::Integer,
        aliases: &[],
        help: "Largest request body accepted (uploads have their own limit). Past it: 413 `payload_too_large`.",
    },
    Setting {
        key: "http.shutdown_grace_secs",
        default: "20",
        kind: Kind::Integer,
        aliases: &[],
        help: "On SIGTERM or SIGINT, how long in-flight requests may finish before the process exits anyway.",
    },
    Setting {
        key: "http.trusted_proxies",
        default: "",
        kind: Kind::List,
        aliases: &[],
        help: "Networks (CIDR) of reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed, e.g. `10.0.0.0/8`.",
    },
    Setting {
        key: "cors.allowed_origins",
        default: "",
        kind: Kind::List,
        aliases: &[],
        help: "Origins other than Cairn's own that browsers may call the API from, e.g. `https://app.example.com`. `*` allows any (refused in production with credentials).",
    },
    Setting {
        key: "cors.allow_credentials",
        default: "true",
        kind: Kind::Bool,
        aliases: &[],
        help: "Whether those origins may send cookies.",
    },
    Setting {
        key: "metrics.enabled",
        default: "true",
        kind: Kind::Bool,
        aliases: &[],
        help: "Serve Prometheus metrics at `/metrics`.",
    },
    Setting {
        key: "metrics.allow_networks",
        default: "127.0.0.0/8,::1/128",
        kind: Kind::List,
        aliases: &[],
        help: "Networks (CIDR) whose clients may read `/metrics` without a token.",
    },
    Setting {
        key: "metrics.token",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "Bearer token that lets any client read `/metrics` (`Authorization: Bearer …`).",
    },
    Setting {
        key: "metrics.public",
        default: "false",
        kind: Kind::Bool,
        aliases: &[],
        help: "Serve `/metrics` to everyone. Refused in production unless `metrics.token` is also set.",
    },
    Setting {
        key: "health.check_cache_ms",
        default: "1000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Dependency checks behind `/api/health` run at most this often; callers in between get the last result.",
    },
    Setting {
        key: "health.check_timeout_ms",
        default: "2000",
        kind: Kind::Integer,
        aliases: &[],
        help: "How long one dependency check may take before it counts as failed.",
    },
    Setting {
        key: "audit.retention_days",
        default: "365",
        kind: Kind::Integer,
        aliases: &[],
        help: "Audit-log entries older than this many days are deleted (checked at start and daily). 0 keeps them forever.",
    },
    Setting {
        key: "rate_limit.enabled",
        default: "true",
        kind: Kind::Bool,
        aliases: &[],
        help: "Limit request rates (answering 429 with `Retry-After`). Shared through Redis when `redis_url` is set, else kept in this process.",
    },
    Setting {
        key: "rate_limit.general_per_minute",
        default: "120",
        kind: Kind::Integer,
        aliases: &[],
        help: "Requests a minute per signed-in user (or per client address when anonymous), bursts included.",
    },
    Setting {
        key: "rate_limit.auth_per_minute",
        default: "10",
        kind: Kind::Integer,
        aliases: &[],
        help: "Requests a minute per client address to the authentication routes (setup, sign-up, sign-in, refresh).",
    },
    Setting {
        key: "rate_limit.account_per_minute",
        default: "5",
        kind: Kind::Integer,
        aliases: &[],
        help: "Sign-in attempts a minute per account, from all addresses together.",
    },
    Setting {
        key: "rate_limit.max_tracked_keys",
        default: "1000000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most addresses and users the in-process limiter tracks at once; idle ones are forgotten first.",
    },
    Setting {
        key: "storage.backend",
        default: "local",
        kind: Kind::Choice(&["local", "s3"]),
        aliases: &[],
        help: "Where uploaded files are kept, encrypted: a local directory (`storage.path`) or an S3-compatible bucket (`storage.s3_*`).",
    },
    Setting {
        key: "storage.path",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "The local blobs directory. Empty: `blobs/` in the data directory.",
    },
    Setting {
        key: "storage.s3_bucket",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "The S3 bucket (it must exist).",
    },
    Setting {
        key: "storage.s3_endpoint",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "The S3 endpoint URL for S3-compatible stores (MinIO, Garage, Ceph…). Empty: AWS.",
    },
    Setting {
        key: "storage.s3_region",
        default: "us-east-1",
        kind: Kind::Text,
        aliases: &[],
        help: "The S3 region.",
    },
    Setting {
        key: "storage.s3_access_key_id",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "The S3 access key id. Empty: the usual AWS environment and instance credentials.",
    },
    Setting {
        key: "storage.s3_secret_access_key",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "The S3 secret access key.",
    },
    Setting {
        key: "storage.s3_allow_http",
        default: "false",
        kind: Kind::Bool,
        aliases: &[],
        help: "Allow a plain-HTTP S3 endpoint (a store on the same host or private network). Blobs are encrypted either way.",
    },
    Setting {
        key: "uploads.max_file_bytes",
        default: "26214400",
        kind: Kind::Integer,
        aliases: &[],
        help: "Largest file one upload may carry (25 MiB). Larger uploads are refused with 413 while they stream, before they are stored.",
    },
    Setting {
        key: "uploads.user_quota_bytes",
        default: "1073741824",
        kind: Kind::Integer,
        aliases: &[],
        help: "Bytes of files each user may keep (1 GiB; 0: no quota). Deleted files count until they are purged.",
    },
    Setting {
        key: "uploads.profile",
        default: "office",
        kind: Kind::Choice(&["safe", "office", "all"]),
        aliases: &[],
        help: "Which file types uploads may be, decided from their content: `safe` (text, Markdown, PDF), `office` (also DOCX, XLSX, PPTX, ODT, CSV), `all` (also HTML, JSON, WebVTT and SRT transcripts).",
    },
    Setting {
        key: "uploads.allowed_kinds",
        default: "",
        kind: Kind::List,
        aliases: &[],
        help: "Exactly these kinds instead of the profile's, e.g. `pdf,markdown,vtt`. Kinds: text, markdown, html, pdf, docx, pptx, xlsx, odt, csv, json, vtt, srt.",
    },
    Setting {
        key: "uploads.timeout_secs",
        default: "3600",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most time one upload request may take (uploads are exempt from `http.request_timeout_secs`).",
    },
    Setting {
        key: "uploads.zip_max_entries",
        default: "10000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most entries an office file (a zip container) may hold.",
    },
    Setting {
        key: "uploads.zip_max_uncompressed_bytes",
        default: "268435456",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most bytes an office file may expand to (256 MiB), counted while decompressing.",
    },
    Setting {
        key: "uploads.zip_max_ratio",
        default: "100",
        kind: Kind::Integer,
        aliases: &[],
        help: "Highest compression ratio an office file's entries may have (a zip bomb has thousands).",
    },
    Setting {
        key: "ingest.workers",
        default: "2",
        kind: Kind::Integer,
        aliases: &[],
        help: "Ingestion workers inside `cairn serve`. 0: run none there, and run `cairn worker` separately.",
    },
    Setting {
        key: "ingest.job_timeout_secs",
        default: "300",
        kind: Kind::Integer,
        aliases: &[],
        help: "A job's lease: a worker that stops heartbeating for this long loses the job to the watchdog, which queues it again.",
    },
    Setting {
        key: "ingest.max_attempts",
        default: "3",
        kind: Kind::Integer,
        aliases: &[],
        help: "Attempts per ingestion job before the document ends `failed`, with backoff between them.",
    },
    Setting {
        key: "ingest.parse_timeout_secs",
        default: "60",
        kind: Kind::Integer,
        aliases: &[],
        help: "Longest a parser may run on one document before it fails with `parse_timeout`.",
    },
    Setting {
        key: "ingest.max_text_bytes",
        default: "67108864",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most text one document may yield (64 MiB); more fails it with `too_much_text`.",
    },
    Setting {
        key: "ingest.chunk_tokens",
        default: "400",
        kind: Kind::Integer,
        aliases: &[],
        help: "Target size of a chunk, in tokens.",
    },
    Setting {
        key: "ingest.chunk_overlap_tokens",
        default: "50",
        kind: Kind::Integer,
        aliases: &[],
        help: "Tokens each chunk repeats from the end of the one before.",
    },
    Setting {
        key: "embeddings.provider",
        default: "none",
        kind: Kind::Choice(&["none", "local", "openai"]),
        aliases: &[],
        help: "Where chunk and query vectors come from: `none` (keyword search only), `local` (a sentence-transformers model run in-process on the CPU, from `embeddings.model_dir`), or `openai` (any OpenAI-compatible `/embeddings` endpoint at `embeddings.url`). Changing the model re-embeds every collection in the background.",
    },
    Setting {
        key: "embeddings.model",
        default: "all-MiniLM-L6-v2",
        kind: Kind::Text,
        aliases: &[],
        help: "The model's name: recorded with each collection; for `openai`, the `model` sent with each request.",
    },
    Setting {
        key: "embeddings.model_dir",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "For `local`: the directory holding `config.json`, `tokenizer.json` and `model.safetensors` (empty: `<data_dir>/models/<embeddings.model>`).",
    },
    Setting {
        key: "embeddings.url",
        default: "",
        kind: Kind::Text,
        aliases: &[],
        help: "For `openai`: the API base URL up to the version, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.",
    },
    Setting {
        key: "embeddings.api_key",
        default: "",
        kind: Kind::Secret,
        aliases: &[],
        help: "For `openai`: the bearer token, when the endpoint needs one.",
    },
    Setting {
        key: "embeddings.batch_size",
        default: "32",
        kind: Kind::Integer,
        aliases: &[],
        help: "Texts embedded per model call.",
    },
    Setting {
        key: "embeddings.concurrency",
        default: "1",
        kind: Kind::Integer,
        aliases: &[],
        help: "Model calls at once (a local model already uses every core for each).",
    },
    Setting {
        key: "embeddings.max_tokens",
        default: "256",
        kind: Kind::Integer,
        aliases: &[],
        help: "For `local`: tokens of each text the model reads (the rest is cut; all-MiniLM-L6-v2 was trained on 256).",
    },
    Setting {
        key: "embeddings.timeout_secs",
        default: "60",
        kind: Kind::Integer,
        aliases: &[],
        help: "For `openai`: how long one request may take.",
    },
    Setting {
        key: "search.default_top_k",
        default: "10",
        kind: Kind::Integer,
        aliases: &[],
        help: "Results a search returns when it does not say.",
    },
    Setting {
        key: "search.max_top_k",
        default: "100",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most results one search may ask for.",
    },
    Setting {
        key: "search.candidates",
        default: "100",
        kind: Kind::Integer,
        aliases: &[],
        help: "Candidates the keyword and the vector index each contribute before fusion.",
    },
    Setting {
        key: "search.max_query_chars",
        default: "2000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Longest query accepted, in characters (longer: 422 `query_too_long`).",
    },
    Setting {
        key: "search.rrf_k",
        default: "60",
        kind: Kind::Integer,
        aliases: &[],
        help: "Reciprocal Rank Fusion's k: each index adds weight / (k + rank) for every result.",
    },
    Setting {
        key: "search.keyword_weight",
        default: "1.0",
        kind: Kind::Decimal,
        aliases: &[],
        help: "Weight of the keyword ranking in hybrid search.",
    },
    Setting {
        key: "search.semantic_weight",
        default: "1.0",
        kind: Kind::Decimal,
        aliases: &[],
        help: "Weight of the vector ranking in hybrid search.",
    },
    Setting {
        key: "search.snippet_chars",
        default: "240",
        kind: Kind::Integer,
        aliases: &[],
        help: "Length of each result's snippet, in characters.",
    },
    Setting {
        key: "documents.deleted_retention_days",
        default: "30",
        kind: Kind::Integer,
        aliases: &[],
        help: "Days a deleted document can be restored by an admin before it is purged with its file (0: purge at once).",
    },
    Setting {
        key: "auth.registration",
        default: "approval",
        kind: Kind::Choice(&["closed", "invite", "approval", "open"]),
        aliases: &[],
        help: "Who may create an account with `POST /api/auth/sign-up`: nobody (`closed`; admins add people), holders of an admin's invitation (`invite`), anyone pending an admin's approval (`approval`), or anyone at once (`open`). An invitation admits its holder at once under every policy but `closed`.",
    },
    Setting {
        key: "auth.require_2fa",
        default: "off",
        kind: Kind::Choice(&["off", "admins", "everyone"]),
        aliases: &[],
        help: "Who must use two-factor sign-in. Until they enrol, such accounts can sign in but reach only their profile and the enrolment routes (403 `totp_enrolment_required`).",
    },
    Setting {
        key: "auth.access_token_ttl_secs",
        default: "900",
        kind: Kind::Integer,
        aliases: &[],
        help: "Lifetime of an access token. Clients refresh it with their refresh token.",
    },
    Setting {
        key: "auth.session_ttl_secs",
        default: "2592000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Lifetime of a session (its refresh tokens), from sign-in: 30 days by default.",
    },
    Setting {
        key: "auth.standing_cache_secs",
        default: "5",
        kind: Kind::Integer,
        aliases: &[],
        help: "How long a replica may remember a caller's account, session or API key instead of reading the database on each request (0: read every time). Every change made through Cairn voids the memory at once, on every replica (through Redis when `redis_url` is set, else PostgreSQL notifications); this bounds only changes made behind Cairn's back, such as a direct SQL edit (`cairn admin reset-password` tells running servers through Redis or PostgreSQL; with SQLite and no Redis it waits this long).",
    },
    Setting {
        key: "auth.standing_cache_entries",
        default: "100000",
        kind: Kind::Integer,
        aliases: &[],
        help: "Most sessions and API keys remembered at once by `auth.standing_cache_secs`.",
    },
    Setting {
        key: "auth.password_min_length",
        default: "12",
        kind: Kind::Integer,
        aliases: &[],
        help: "Shortest password accepted (8 to 128). Common passwords are refused whatever their length.",
    },
    Setting {
        key: "auth.password_require_classes",
        default: "false",
        kind: Kind::Bool,
        aliases: &[],
        help: "Also require a lower-case letter, an upper-case letter, a digit and a symbol (off by default, as NIST SP 800-63B advises).",
    },
    Setting {
        key: "auth.argon2_memory_kib",
        default: "19456",
        kind: Kind::Integer,
        aliases: &[],
        help: "Argon2id memory per password hash, in KiB.",
    },
    Setting {
        key: "auth.argon2_iterations",
        default: "3",
        kind: Kind::Integer,
        aliases: &[],
        help: "Argon2id passes per password hash. With the default memory, 3 passes take about 45 ms on one core of a 2-core machine (see docs/benchmarks.md).",
    },
    Setting {
        key: "auth.hash_concurrency",
        default: "0",
        kind: Kind::Integer,
        aliases: &[],
        help: "Password hashes computed at once; more wait their turn. 0: the number of CPU cores.",
    },
    Setting {
        key: "auth.sign_in_free_failures",
        default: "5",
        kind: Kind::Integer,
        aliases: &[],
        help: "Failed sign-ins allowed before an account is slowed down: each further failure locks sign-in for 30 s, doubling, at most 15 minutes; a success resets it.",
    },
];

/// The setting with this dotted key.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}
