//! Certificates from an ACME CA (RFC 8555) through `instant-acme`: one account per directory
//! URL, kept in `<data_dir>/tls/acme/account.json`; the certificate and its key in `cert.pem`
//! and `key.pem` beside it (all owner-only). Challenges are answered by this process: HTTP-01
//! on the plain-HTTP listener, TLS-ALPN-01 by the HTTPS listener's certificate resolver.
//!
//! When the CA cannot be reached or refuses, the current certificate keeps being served and
//! the attempt is retried with exponential backoff (1 minute doubling to 6 hours).

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
const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);
/// Even with nothing due, look again this often (the clock may jump; names may change).
const RECHECK: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The cached certificate, if there is a readable one.
pub fn load_cached(dir: &Path) -> Option<Loaded> {
    let cert = dir.join("cert.pem");
    if !cert.exists() {
        return None;
    }
    match certs::load_files(&cert, &dir.join("key.pem")) {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the cached ACME certificate");
            None
        }
    }
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
    let margin = i64::from(config.tls.renew_before_days) * 86_400;
    let mut failures = 0u32;
    loop {
        let wait = match resolver.info() {
            Some((info, false)) if info.covers(&hosts) && !info.due(certs::now(), margin) => {
                let lifetime = (info.not_after - info.not_before).max(0);
                let due_at = info.not_after - margin.min(lifetime / 3);
                Some(Duration::from_secs(
                    u64::try_from(due_at - certs::now()).unwrap_or(0),
                ))
            }
            _ => None,
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait.min(RECHECK)).await;
            continue;
        }
        match issue(config, &hosts, resolver, http01).await {
            Ok(loaded) => {
                failures = 0;
                tracing::info!(
                    hosts = ?hosts, serial = %loaded.info.serial,
                    expires = %chrono::DateTime::from_timestamp(loaded.info.not_after, 0).unwrap_or_default(),
                    "obtained a certificate from the ACME server"
                );
                metrics.tls_certificate(&loaded.info);
                resolver.set(loaded, false);
            }
            Err(e) => {
                failures += 1;
                let retry = backoff(failures);
                metrics.tls_renewal_failed();
                tracing::error!(
                    error = %e, directory = %config.tls.acme_directory, retry_in_secs = retry.as_secs(),
                    "cannot obtain a certificate from the ACME server; still serving the current one"
                );
                tokio::time::sleep(retry).await;
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
    certs::write_private(&path, &saved)
        .map_err(|e| format!("cannot save the ACME account to {}: {e}", path.display()))?;
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
    certs::write_private(&dir.join("key.pem"), key_pem.as_bytes())
        .and_then(|_| certs::write_private(&dir.join("cert.pem"), cert_pem.as_bytes()))
        .map_err(|e| format!("cannot save the certificate in {}: {e}", dir.display()))?;
    Ok(loaded)
}

/// Wait for validation, send a CSR for a fresh key, and fetch the chain.
async fn finish(
    order: &mut instant_acme::Order,
    hosts: &[String],
) -> Result<(String, String), String> {
    let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order.poll_ready(&retry).await.map_err(|e| e.to_string())?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(format!(
            "validation did not succeed (order {status:?}) {detail}"
        ));
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
