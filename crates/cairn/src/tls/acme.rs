//! Certificates from an ACME CA (RFC 8555) through `instant-acme`: one account per directory
//! URL, kept in `<data_dir>/tls/acme/account.json`; the certificate chain, its key and the
//! directory that issued it in `certificate.json` beside it, written in one atomic step (both
//! owner-only). Challenges are answered by this process: HTTP-01 on the plain-HTTP listener,
//! TLS-ALPN-01 by the HTTPS listener's certificate resolver.
//!
//! When the CA cannot be reached, hangs or refuses, the current certificate keeps being served
//! and the attempt is retried with exponential backoff (1 minute doubling to 6 hours). A
//! certificate that was issued is served even if saving it fails, so a full disk never costs
//! another issuance (CAs limit those).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::certs::{self, Loaded};
use super::{Http01Tokens, Resolver};
use crate::config::{AcmeChallenge, Config};
use crate::ops::metrics::Metrics;

const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The most one whole issuance (account, order, validation, certificate) may take.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(600);
const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);
/// Even with nothing due, look again this often (the clock may jump; names may change).
const RECHECK: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The cached certificate with everything needed to serve it again.
#[derive(Serialize, Deserialize)]
struct Cached {
    directory: String,
    chain_pem: String,
    key_pem: String,
}

fn cache_path(dir: &Path) -> std::path::PathBuf {
    dir.join("certificate.json")
}

/// The cached certificate, if there is a readable one from `directory`.
pub fn load_cached(dir: &Path, directory: &str) -> Result<Option<Loaded>, String> {
    let path = cache_path(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cached: Cached = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a certificate cache: {e}", path.display()))?;
    if cached.directory != directory {
        // From another CA (staging, say): not to be served by this one.
        return Ok(None);
    }
    certs::from_pem(cached.chain_pem.as_bytes(), cached.key_pem.as_bytes())
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn save(dir: &Path, directory: &str, chain_pem: &str, key_pem: &str) -> Result<(), String> {
    let cached = serde_json::to_vec_pretty(&Cached {
        directory: directory.to_owned(),
        chain_pem: chain_pem.to_owned(),
        key_pem: key_pem.to_owned(),
    })
    .map_err(|e| e.to_string())?;
    certs::write_private(&cache_path(dir), &cached)
        .map_err(|e| format!("cannot save the certificate in {}: {e}", dir.display()))
}

/// The wait before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_RETRY.saturating_mul(factor).min(LONGEST_RETRY)
}

/// Obtain a certificate when none (or only the provisional one) is served, when the names
/// changed, or when it is due for renewal; then sleep until it is due again.
pub async fn upkeep(
    config: &Config,
    resolver: &Resolver,
    http01: &Http01Tokens,
    metrics: &Metrics,
) {
    let hosts = config.tls_hosts();
    let margin = super::renew_margin(config);
    let mut failures = 0u32;
    loop {
        let wait = match resolver.info() {
            Some((info, false)) if info.covers(&hosts) && !info.due(certs::now(), margin) => {
                Some(Duration::from_secs(
                    u64::try_from(info.renew_at(margin) - certs::now()).unwrap_or(0),
                ))
            }
            _ => None,
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait.min(RECHECK)).await;
            continue;
        }
        let outcome =
            match tokio::time::timeout(ISSUANCE_TIMEOUT, issue(config, &hosts, resolver, http01))
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    // The challenge answers posted by the abandoned attempt go with it.
                    http01.clear();
                    resolver.clear_all_alpn();
                    Err(format!(
                        "no answer from the ACME server within {} s",
                        ISSUANCE_TIMEOUT.as_secs()
                    ))
                }
            };
        let problem = match outcome {
            Ok(loaded) => {
                tracing::info!(
                    hosts = ?hosts, serial = %loaded.info.serial,
                    expires = %chrono::DateTime::from_timestamp(loaded.info.not_after, 0).unwrap_or_default(),
                    "obtained a certificate from the ACME server"
                );
                metrics.tls_certificate(&loaded.info);
                let covers = loaded.info.covers(&hosts);
                let due = loaded.info.due(certs::now(), margin);
                resolver.set(loaded, false);
                if covers && !due {
                    failures = 0;
                    continue;
                }
                // Served, but it would be ordered again at once: back off instead.
                format!(
                    "the issued certificate does not cover {hosts:?} or is already due for renewal"
                )
            }
            Err(e) => e,
        };
        failures += 1;
        let retry = backoff(failures);
        metrics.tls_renewal_failed();
        tracing::error!(
            error = %problem, directory = %config.tls.acme_directory, retry_in_secs = retry.as_secs(),
            "cannot obtain a certificate from the ACME server; still serving the current one"
        );
        keep_provisional_fresh(&hosts, resolver);
        tokio::time::sleep(retry).await;
    }
}

/// While no real certificate was ever obtained, keep the stand-in from expiring.
fn keep_provisional_fresh(hosts: &[String], resolver: &Resolver) {
    if let Some((info, true)) = resolver.info() {
        if info.not_after - certs::now() < 2 * 86_400 {
            match super::provisional(hosts) {
                Ok(loaded) => resolver.set(loaded, true),
                Err(e) => tracing::error!(error = %e, "cannot renew the temporary certificate"),
            }
        }
    }
}

async fn account(config: &Config, dir: &Path) -> Result<Account, String> {
    let builder = || match &config.tls.acme_ca_root {
        Some(root) => Account::builder_with_root(root)
            .map_err(|e| format!("cannot use `tls.acme_ca_root` {}: {e}", root.display())),
        None => Account::builder().map_err(|e| e.to_string()),
    };
    let path = dir.join("account.json");
    let directory = config.tls.acme_directory.clone();
    if let Ok(text) = tokio::fs::read(&path).await {
        match serde_json::from_slice::<SavedAccount>(&text) {
            Ok(saved) if saved.directory == directory => {
                return builder()?
                    .from_credentials(saved.credentials)
                    .await
                    .map_err(|e| format!("cannot reach the ACME directory {directory}: {e}"));
            }
            Ok(_) => {
                tracing::info!(directory = %directory, "new ACME directory: registering a new account")
            }
            Err(e) => tracing::warn!(error = %e, "replacing an unreadable ACME account file"),
        }
    }
    let contact = config
        .tls
        .acme_email
        .as_ref()
        .map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot register an account with {directory}: {e}"))?;
    let saved = serde_json::to_vec_pretty(&SavedAccount {
        directory,
        credentials,
    })
    .map_err(|e| e.to_string())?;
    if let Err(e) = certs::write_private(&path, &saved) {
        // The account works for this attempt; the next run registers another.
        tracing::error!(path = %path.display(), error = %e, "cannot save the ACME account");
    }
    tracing::info!(id = %account.id(), "registered an ACME account");
    Ok(account)
}

/// What to remove once an order is over.
enum Posted {
    Token(String),
    AlpnName(String),
}

async fn issue(
    config: &Config,
    hosts: &[String],
    resolver: &Resolver,
    http01: &Http01Tokens,
) -> Result<Loaded, String> {
    let dir = super::acme_dir(&config.data_dir);
    let account = account(config, &dir).await?;
    let identifiers: Vec<Identifier> = hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(h.clone()),
        })
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("the ACME server refused the order for {hosts:?}: {e}"))?;
    let kind = match config.tls.acme_challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut posted = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| e.to_string())?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "the authorization for {} is {other:?}",
                        authorization.identifier()
                    ))
                }
            }
            let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                format!("the ACME server offers no {kind:?} challenge; try the other `tls.acme_challenge`")
            })?;
            let key_authorization = challenge.key_authorization();
            match config.tls.acme_challenge {
                AcmeChallenge::Http01 => {
                    http01.insert(
                        challenge.token.clone(),
                        key_authorization.as_str().to_owned(),
                    );
                    posted.push(Posted::Token(challenge.token.clone()));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let name = challenge.identifier().to_string();
                    let key = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                    resolver.set_alpn(&name, key);
                    posted.push(Posted::AlpnName(name));
                }
            }
            challenge.set_ready().await.map_err(|e| e.to_string())?;
        }
        finish(&mut order, hosts).await
    }
    .await;
    for p in posted {
        match p {
            Posted::Token(token) => http01.remove(&token),
            Posted::AlpnName(name) => resolver.clear_alpn(&name),
        }
    }
    let (cert_pem, key_pem) = result?;
    let loaded = certs::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
    let (dir2, directory) = (dir.clone(), config.tls.acme_directory.clone());
    let saved =
        tokio::task::spawn_blocking(move || save(&dir2, &directory, &cert_pem, &key_pem)).await;
    match saved {
        Ok(Ok(())) => {}
        // Served anyway: the next start orders again, but this process does not.
        Ok(Err(e)) => tracing::error!(error = %e, "the new certificate is served but not saved"),
        Err(e) => tracing::error!(error = %e, "the new certificate is served but not saved"),
    }
    Ok(loaded)
}

/// Wait for validation, send a CSR for a fresh key, and fetch the chain.
async fn finish(
    order: &mut instant_acme::Order,
    hosts: &[String],
) -> Result<(String, String), String> {
    // Validation of several names from several vantage points can take a minute or more.
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_secs(1))
        .backoff(1.5)
        .timeout(Duration::from_secs(180));
    let status = order
        .poll_ready(&retry)
        .await
        .map_err(|e| format!("validation failed: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!("validation did not succeed (order {status:?})"));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("the ACME server refused the certificate request: {e}"))?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| format!("no certificate from the ACME server: {e}"))?;
    Ok((chain, key.serialize_pem()))
}

/// The TLS-ALPN-01 answer for `name` (RFC 8737): a self-signed certificate carrying the
/// digest of the key authorization in the `acmeIdentifier` extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(certs::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(9), Duration::from_secs(15_360));
        assert_eq!(backoff(10), LONGEST_RETRY);
        assert_eq!(backoff(u32::MAX), LONGEST_RETRY);
    }
}
