//! HTTPS served by Cairn itself (`tls.mode`). One certificate [`Resolver`] serves every
//! handshake and its certificate is swapped in place, so renewal and reload never restart the
//! server:
//!
//! - `self-signed`: generated into `<data_dir>/tls/` when missing, wrong for the configured
//!   names, or near expiry, and regenerated before it expires.
//! - `files`: the operator's PEM files, reloaded when they change (checked every
//!   `tls.reload_check_secs`) or at SIGHUP. A reload that fails keeps the current certificate.
//! - `acme`: issued by an ACME CA (Let's Encrypt by default) through `instant-acme`, cached in
//!   `<data_dir>/tls/acme/`, renewed before expiry; while none is issued yet a temporary
//!   self-signed one is served, and an unreachable CA is retried with backoff.
//!
//! TLS 1.2 and 1.3 only (rustls with the ring provider); HTTP/2 and HTTP/1.1 by ALPN.

pub mod acme;
pub mod certs;
mod listener;
pub mod redirect;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

pub use certs::CertInfo;
pub use listener::TlsListener;

use crate::config::{AcmeChallenge, Config, TlsMinVersion, TlsMode};
use crate::ops::metrics::Metrics;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS (`tls.mode = files`): {0}. Fix the files or the `tls.cert_file` / `tls.key_file` settings")]
    Files(String),
    #[error("TLS: {0}")]
    Setup(String),
}

/// The certificate being served.
#[derive(Clone)]
struct Current {
    loaded: certs::Loaded,
    /// A stand-in served until the real one exists (ACME before its first issuance).
    provisional: bool,
}

/// Chooses the certificate for each handshake: the current one, or a TLS-ALPN-01 challenge
/// certificate when an ACME validator asks for `acme-tls/1`.
#[derive(Default)]
pub struct Resolver {
    current: RwLock<Option<Current>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    fn set(&self, loaded: certs::Loaded, provisional: bool) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Current {
                loaded,
                provisional,
            });
        }
    }

    /// The served certificate's details, and whether it is a provisional stand-in.
    pub fn info(&self) -> Option<(CertInfo, bool)> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .map(|c| (c.loaded.info.clone(), c.provisional))
    }

    fn set_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        if let Ok(mut alpn) = self.alpn.write() {
            alpn.insert(name.to_ascii_lowercase(), key);
        }
    }

    fn clear_alpn(&self, name: &str) {
        if let Ok(mut alpn) = self.alpn.write() {
            alpn.remove(&name.to_ascii_lowercase());
        }
    }

    fn clear_all_alpn(&self) {
        if let Ok(mut alpn) = self.alpn.write() {
            alpn.clear();
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737: a validator offers `acme-tls/1` and nothing else; only it may see the
        // challenge certificate, and every other client gets the real one.
        let validator = hello.alpn().is_some_and(|protocols| {
            let offered: Vec<&[u8]> = protocols.collect();
            offered == [ACME_TLS_ALPN]
        });
        if validator {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.alpn.read().ok()?.get(&name).cloned();
        }
        let current = self.current.read().ok()?;
        current.as_ref().map(|c| c.loaded.key.clone())
    }
}

/// Pending HTTP-01 challenges: token → key authorization, answered by the redirect listener.
#[derive(Default, Debug)]
pub struct Http01Tokens(RwLock<HashMap<String, String>>);

impl Http01Tokens {
    pub fn get(&self, token: &str) -> Option<String> {
        self.0.read().ok()?.get(token).cloned()
    }

    fn insert(&self, token: String, key_authorization: String) {
        if let Ok(mut map) = self.0.write() {
            map.insert(token, key_authorization);
        }
    }

    fn remove(&self, token: &str) {
        if let Ok(mut map) = self.0.write() {
            map.remove(token);
        }
    }

    fn clear(&self) {
        if let Ok(mut map) = self.0.write() {
            map.clear();
        }
    }
}

/// TLS for one server: the rustls configuration and what keeps its certificate current.
pub struct Tls {
    pub server_config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<Resolver>,
    pub http01: Arc<Http01Tokens>,
    pub handshake_timeout: Duration,
    /// `files` mode: the files' stamps taken just before they were loaded, so a change made
    /// while the server starts is not missed.
    file_stamps: Option<Stamps>,
}

type Stamps = (Option<Stamp>, Option<Stamp>);

/// Where `self-signed` mode keeps its certificate.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("self-signed.crt"), dir.join("self-signed.key"))
}

/// Where `acme` mode keeps its account and certificate.
pub fn acme_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("acme")
}

impl Tls {
    /// Load or create the certificate for `config.tls.mode` and build the TLS configuration.
    /// Only a certificate that cannot be loaded at all is an error; ACME issuance happens in
    /// [`spawn_upkeep`](Self::spawn_upkeep).
    pub fn prepare(config: &Config) -> Result<Tls, TlsError> {
        let resolver = Arc::new(Resolver::default());
        let mut file_stamps = None;
        match config.tls.mode {
            TlsMode::Off => return Err(TlsError::Setup("`tls.mode` is off".into())),
            TlsMode::SelfSigned => {
                let loaded = ensure_self_signed(config, certs::now())?;
                resolver.set(loaded, false);
            }
            TlsMode::Files => {
                let (cert, key) = file_paths(config)?;
                file_stamps = Some((stamp(cert), stamp(key)));
                let loaded = certs::load_files(cert, key).map_err(TlsError::Files)?;
                warn_if_expiring(&loaded.info, "tls.cert_file");
                resolver.set(loaded, false);
            }
            TlsMode::Acme => {
                let hosts = config.tls_hosts();
                if hosts.is_empty() {
                    return Err(TlsError::Setup(
                        "`tls.mode = acme` needs the names to certify: set `tls.hosts` or an https `public_url`".into(),
                    ));
                }
                let cached =
                    acme::load_cached(&acme_dir(&config.data_dir), &config.tls.acme_directory);
                match cached {
                    // Still valid: served even when a name was added (renewal adds it), so
                    // the names that worked keep working meanwhile.
                    Ok(Some(loaded)) if loaded.info.not_after > certs::now() => {
                        resolver.set(loaded, false);
                    }
                    other => {
                        if let Err(e) = other {
                            tracing::warn!(error = %e, "ignoring the cached ACME certificate");
                        }
                        tracing::warn!(
                            hosts = ?hosts,
                            "no ACME certificate yet: serving a temporary self-signed one until it is issued"
                        );
                        resolver.set(provisional(&hosts).map_err(TlsError::Setup)?, true);
                    }
                }
            }
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = match config.tls.min_version {
            TlsMinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsMinVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if config.tls.mode == TlsMode::Acme && config.tls.acme_challenge == AcmeChallenge::TlsAlpn01
        {
            server_config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        server_config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(Tls {
            server_config: Arc::new(server_config),
            resolver,
            http01: Arc::new(Http01Tokens::default()),
            handshake_timeout: config.tls.handshake_timeout,
            file_stamps,
        })
    }

    /// Keep the certificate current for as long as the server runs: renew self-signed ones,
    /// reload changed files (and at SIGHUP), obtain and renew ACME ones.
    pub fn spawn_upkeep(&self, config: &Config, metrics: Metrics) -> tokio::task::JoinHandle<()> {
        if let Some((info, false)) = self.resolver.info() {
            metrics.tls_certificate(&info);
        }
        let resolver = self.resolver.clone();
        let http01 = self.http01.clone();
        let config = config.clone();
        let stamps = self.file_stamps;
        tokio::spawn(async move {
            match config.tls.mode {
                TlsMode::Off => {}
                TlsMode::SelfSigned => self_signed_upkeep(&config, &resolver, &metrics).await,
                TlsMode::Files => files_upkeep(&config, &resolver, &metrics, stamps).await,
                TlsMode::Acme => acme::upkeep(&config, &resolver, &http01, &metrics).await,
            }
        })
    }
}

/// The stand-in served until the first ACME certificate arrives: self-signed, a week long.
fn provisional(hosts: &[String]) -> Result<certs::Loaded, String> {
    let names = certs::self_signed_names(hosts);
    let (cert, key) = certs::generate_self_signed(&names, 7)?;
    certs::from_pem(cert.as_bytes(), key.as_bytes())
}

fn file_paths(config: &Config) -> Result<(&Path, &Path), TlsError> {
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => Ok((c, k)),
        _ => Err(TlsError::Files(
            "`tls.cert_file` and `tls.key_file` must both be set".into(),
        )),
    }
}

pub(crate) fn renew_margin(config: &Config) -> i64 {
    i64::from(config.tls.renew_before_days) * 86_400
}

fn warn_if_expiring(info: &CertInfo, source: &str) {
    let left = info.not_after - certs::now();
    if left <= 0 {
        tracing::error!(
            source,
            "the TLS certificate has expired: browsers will refuse it"
        );
    } else if left < 14 * 86_400 {
        tracing::warn!(
            source,
            days_left = left / 86_400,
            "the TLS certificate expires soon"
        );
    }
}

/// The self-signed certificate on disk, regenerated when it is missing, unreadable, lacks a
/// configured name, or is due for renewal at `at`.
fn ensure_self_signed(config: &Config, at: i64) -> Result<certs::Loaded, TlsError> {
    let (cert_path, key_path) = self_signed_paths(&config.data_dir);
    let names = certs::self_signed_names(&config.tls_hosts());
    if cert_path.exists() {
        match certs::load_files(&cert_path, &key_path) {
            Ok(loaded)
                if loaded.info.covers(&names) && !loaded.info.due(at, renew_margin(config)) =>
            {
                return Ok(loaded)
            }
            Ok(_) => tracing::info!("renewing the self-signed certificate"),
            Err(e) => tracing::warn!(error = %e, "replacing an unreadable self-signed certificate"),
        }
    }
    let (cert, key) = certs::generate_self_signed(&names, config.tls.self_signed_days)
        .map_err(TlsError::Setup)?;
    certs::write_private(&key_path, key.as_bytes())
        .and_then(|_| certs::write_private(&cert_path, cert.as_bytes()))
        .map_err(|e| {
            TlsError::Setup(format!(
                "cannot write the self-signed certificate to {}: {e}",
                cert_path.display()
            ))
        })?;
    let loaded = certs::from_pem(cert.as_bytes(), key.as_bytes()).map_err(TlsError::Setup)?;
    tracing::info!(
        path = %cert_path.display(), names = ?names, days = config.tls.self_signed_days,
        "generated a self-signed certificate (browsers will warn; use `files` or `acme` for a trusted one)"
    );
    Ok(loaded)
}

async fn self_signed_upkeep(config: &Config, resolver: &Resolver, metrics: &Metrics) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let Some((info, _)) = resolver.info() else {
            continue;
        };
        if !info.due(certs::now(), renew_margin(config)) {
            continue;
        }
        let config = config.clone();
        let at = certs::now();
        match tokio::task::spawn_blocking(move || ensure_self_signed(&config, at)).await {
            Ok(Ok(loaded)) => {
                metrics.tls_certificate(&loaded.info);
                resolver.set(loaded, false);
            }
            Ok(Err(e)) => {
                metrics.tls_renewal_failed();
                tracing::error!(error = %e, "cannot renew the self-signed certificate; retrying in an hour");
            }
            Err(e) => tracing::error!(error = %e, "self-signed renewal stopped"),
        }
    }
}

/// What identifies one version of a file: changed content shows as a new size, mtime or inode.
type Stamp = (u64, i128, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.len(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        meta.ino(),
    ))
}

async fn files_upkeep(
    config: &Config,
    resolver: &Resolver,
    metrics: &Metrics,
    loaded: Option<Stamps>,
) {
    let Ok((cert, key)) = file_paths(config) else {
        return;
    };
    let (cert, key) = (cert.to_owned(), key.to_owned());
    let mut seen = loaded.unwrap_or_else(|| (stamp(&cert), stamp(&key)));
    // A change is loaded once it holds still for one check: tools that write the certificate
    // and the key one after the other (or copy without renaming) are not caught halfway.
    let mut settling: Option<Stamps> = None;
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are still checked for changes");
            None
        }
    };
    let mut tick = tokio::time::interval(config.tls.reload_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now_seen = (stamp(&cert), stamp(&key));
        if !by_signal {
            if now_seen == seen {
                settling = None;
                continue;
            }
            if settling.as_ref() != Some(&now_seen) {
                settling = Some(now_seen);
                continue;
            }
        }
        settling = None;
        seen = now_seen;
        let (c, k) = (cert.clone(), key.clone());
        match tokio::task::spawn_blocking(move || certs::load_files(&c, &k)).await {
            Ok(Ok(loaded)) => {
                tracing::info!(
                    serial = %loaded.info.serial, names = ?loaded.info.names,
                    reason = if by_signal { "SIGHUP" } else { "files changed" },
                    "reloaded the TLS certificate"
                );
                warn_if_expiring(&loaded.info, "tls.cert_file");
                metrics.tls_certificate(&loaded.info);
                resolver.set(loaded, false);
            }
            Ok(Err(e)) => {
                metrics.tls_renewal_failed();
                tracing::error!(error = %e, "cannot reload the TLS certificate; still serving the previous one");
            }
            Err(e) => tracing::error!(error = %e, "certificate reload stopped"),
        }
    }
}

/// The certificate this configuration serves from disk, for `cairn doctor`: `Ok(None)` when
/// TLS is off or (ACME) none is issued yet.
pub fn certificate_on_disk(config: &Config) -> Result<Option<CertInfo>, String> {
    match config.tls.mode {
        TlsMode::Off => Ok(None),
        TlsMode::Files => {
            let (cert, key) = file_paths(config).map_err(|e| e.to_string())?;
            certs::load_files(cert, key).map(|l| Some(l.info))
        }
        TlsMode::SelfSigned => {
            let (cert, key) = self_signed_paths(&config.data_dir);
            if !cert.exists() {
                return Ok(None);
            }
            certs::load_files(&cert, &key).map(|l| Some(l.info))
        }
        TlsMode::Acme => acme::load_cached(&acme_dir(&config.data_dir), &config.tls.acme_directory)
            .map(|l| l.map(|l| l.info)),
    }
}
