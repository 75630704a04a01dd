//! Prometheus metrics: requests and latency by matched route and status, the database pool,
//! ingestion outcomes, durations and bytes, queued jobs, process memory and build information. Rendered in the OpenMetrics text format at
//! `/metrics`; who may read it is decided in `routes.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SearchLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    status: String,
}

const INGEST_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// Every metric the server keeps. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pool: Family<PoolLabels, Gauge>,
    resident_memory: Gauge,
    ingested: Family<IngestLabels, Counter>,
    ingest_bytes: Counter,
    ingest_duration: Family<IngestLabels, Histogram>,
    jobs: Family<JobLabels, Gauge>,
    index_chunks: Gauge,
    index_bytes: Gauge,
    searches: Family<SearchLabels, Histogram>,
    embedded_chunks: Counter,
    answers: Family<AnswerLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    first_token: Histogram,
    backup_last_success: Gauge,
    backup_last_bytes: Gauge,
    backup_last_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    backup_failures: Counter,
    tls_expiry: Gauge,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    tls_renewal_failures: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests (until the response head), by method and matched route",
            latency.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections open in the pool, by state (idle, in_use)",
            pool.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            resident_memory.clone(),
        );
        let start = Gauge::<i64>::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        );
        registry.register(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            start,
        );
        let ingested = Family::<IngestLabels, Counter>::default();
        registry.register(
            "documents_ingested",
            "Documents whose ingestion ended, by kind and outcome (ready, failed)",
            ingested.clone(),
        );
        let ingest_bytes = Counter::default();
        registry.register(
            "ingested_bytes",
            "Bytes of documents ingested to ready",
            ingest_bytes.clone(),
        );
        let ingest_duration = Family::<IngestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(INGEST_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        registry.register(
            "ingest_duration_seconds",
            "Time one ingestion attempt took (read, parse, chunk, store), by kind and outcome",
            ingest_duration.clone(),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the queue, by kind and status (sampled at each scrape)",
            jobs.clone(),
        );
        let index_chunks = Gauge::default();
        registry.register(
            "search_index_chunks",
            "Chunks in this process's in-memory search index (SQLite; 0 while it is built or when off)",
            index_chunks.clone(),
        );
        let index_bytes = Gauge::default();
        registry.register(
            "search_index_bytes",
            "Memory held by this process's in-memory search index, approximately",
            index_bytes.clone(),
        );
        let searches = Family::<SearchLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "search_duration_seconds",
            "Time to answer a search (query embedding included), by the mode that ran",
            searches.clone(),
        );
        let embedded_chunks = Counter::default();
        registry.register(
            "embedded_chunks",
            "Chunks given a vector by the embedding model",
            embedded_chunks.clone(),
        );
        let answers = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "chat_answers",
            "Answers streamed, by model and outcome (complete, incomplete, cancelled, failed)",
            answers.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "chat_tokens",
            "Tokens sent to (input) and received from (output) models, by model",
            tokens.clone(),
        );
        let first_token = Histogram::new(INGEST_BUCKETS.iter().copied());
        registry.register(
            "chat_first_token_seconds",
            "Time from a question to the first token of its answer",
            first_token.clone(),
        );
        let backup_last_success = Gauge::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest backup was made (Unix time; read from the destination at start, then set by each backup this process makes; 0: none)",
            backup_last_success.clone(),
        );
        let backup_last_bytes = Gauge::default();
        registry.register(
            "backup_last_size_bytes",
            "Size of the last backup this process made",
            backup_last_bytes.clone(),
        );
        let backup_last_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "backup_last_duration_seconds",
            "How long the last backup this process made took",
            backup_last_seconds.clone(),
        );
        let backup_failures = Counter::default();
        registry.register(
            "backup_failures",
            "Backups that failed in this process",
            backup_failures.clone(),
        );
        let tls_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate Cairn serves expires (Unix time; 0: TLS off or none yet)",
            tls_expiry.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the HTTPS listener, by result (ok, failed, timeout)",
            tls_handshakes.clone(),
        );
        let tls_renewal_failures = Counter::default();
        registry.register(
            "tls_renewal_failures",
            "Failed attempts to obtain, renew or reload the TLS certificate",
            tls_renewal_failures.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            pool,
            resident_memory,
            ingested,
            ingest_bytes,
            ingest_duration,
            jobs,
            index_chunks,
            index_bytes,
            searches,
            embedded_chunks,
            answers,
            tokens,
            first_token,
            backup_last_success,
            backup_last_bytes,
            backup_last_seconds,
            backup_failures,
            tls_expiry,
            tls_handshakes,
            tls_renewal_failures,
        }
    }

    /// The served TLS certificate changed.
    pub fn tls_certificate(&self, info: &crate::tls::CertInfo) {
        self.tls_expiry.set(info.not_after);
    }

    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabels { result })
            .inc();
    }

    pub fn tls_renewal_failed(&self) {
        self.tls_renewal_failures.inc();
    }

    /// The newest backup there is, found at start (so a restart does not hide a stale one).
    pub fn backup_seen(&self, created_unix: i64) {
        if self.backup_last_success.get() < created_unix {
            self.backup_last_success.set(created_unix);
        }
    }

    /// A backup finished.
    pub fn backup_succeeded(&self, created: &crate::backup::Created) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.backup_last_success.set(now);
        self.backup_last_bytes
            .set(i64::try_from(created.bytes).unwrap_or(i64::MAX));
        self.backup_last_seconds.set(created.seconds);
    }

    /// A backup failed.
    pub fn backup_failed(&self) {
        self.backup_failures.inc();
    }

    /// An answer ended.
    pub fn observe_answer(
        &self,
        model: &str,
        outcome: &'static str,
        input_tokens: u64,
        output_tokens: u64,
        first_token_ms: Option<u64>,
    ) {
        self.answers
            .get_or_create(&AnswerLabels {
                model: model.to_owned(),
                outcome,
            })
            .inc();
        for (direction, n) in [("input", input_tokens), ("output", output_tokens)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_owned(),
                    direction,
                })
                .inc_by(n);
        }
        if let Some(ms) = first_token_ms {
            self.first_token.observe(ms as f64 / 1000.0);
        }
    }

    /// A search answered in `secs` seconds.
    pub fn observe_search(&self, mode: &'static str, secs: f64) {
        self.searches
            .get_or_create(&SearchLabels { mode })
            .observe(secs);
    }

    /// `n` more chunks have vectors.
    pub fn observe_embedded(&self, n: u64) {
        self.embedded_chunks.inc_by(n);
    }

    /// One ingestion attempt ended: `ready` (with the document's size) or `failed`.
    pub fn observe_ingest(&self, kind: &str, ready: bool, elapsed: Duration, bytes: u64) {
        let labels = IngestLabels {
            kind: kind.to_owned(),
            outcome: if ready { "ready" } else { "failed" },
        };
        self.ingested.get_or_create(&labels).inc();
        self.ingest_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if ready {
            self.ingest_bytes.inc_by(bytes);
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with gauges sampled now.
    pub fn render(
        &self,
        pool: cairn_store::PoolStats,
        jobs: &[(String, String, i64)],
        index: Option<cairn_store::memindex::IndexStats>,
    ) -> String {
        let index = index.unwrap_or_default();
        self.index_chunks
            .set(i64::try_from(index.chunks).unwrap_or(i64::MAX));
        self.index_bytes
            .set(i64::try_from(index.bytes).unwrap_or(i64::MAX));
        self.jobs.clear();
        for (kind, status, n) in jobs {
            self.jobs
                .get_or_create(&JobLabels {
                    kind: kind.clone(),
                    status: status.clone(),
                })
                .set(*n);
        }
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(i64::from(pool.idle));
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(pool.size.saturating_sub(pool.idle)));
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
pub fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
