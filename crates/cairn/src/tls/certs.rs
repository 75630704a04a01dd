//! Certificates on disk and in memory: reading PEM files into a rustls `CertifiedKey` with a
//! clear reason when they are wrong, learning a certificate's names and expiry, generating
//! self-signed certificates, and writing key material owner-only.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The current Unix time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A certificate ready to serve, with what Cairn reports about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// What the leaf certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// DNS names and IP addresses (as text) of its subject alternative names.
    pub names: Vec<String>,
    pub serial: String,
    /// Whether the certificate is signed by its own key.
    pub self_issued: bool,
}

impl CertInfo {
    /// When it is due for renewal: `before_secs` before expiry, but never before the last
    /// third of its lifetime (so a short-lived certificate is not renewed forever).
    pub fn renew_at(&self, before_secs: i64) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        self.not_after - before_secs.min(lifetime / 3)
    }

    /// Whether it is due for renewal at `now` (see [`Self::renew_at`]).
    pub fn due(&self, now: i64, before_secs: i64) -> bool {
        now >= self.renew_at(before_secs)
    }

    /// Whether it covers every one of `hosts` (case-insensitive; `*.example.com` covers one label).
    pub fn covers(&self, hosts: &[String]) -> bool {
        hosts.iter().all(|h| {
            if let Ok(ip) = h.parse::<IpAddr>() {
                return self.names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
            }
            let h = h.to_ascii_lowercase();
            self.names.iter().any(|n| {
                let n = n.to_ascii_lowercase();
                n == h
                    || n.strip_prefix("*.").is_some_and(|suffix| {
                        h.split_once('.').is_some_and(|(label, rest)| {
                            !label.is_empty() && rest == suffix && h.parse::<IpAddr>().is_err()
                        })
                    })
            })
        })
    }
}

/// Read a certificate chain and its private key from PEM files.
pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Loaded, String> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?;
    let key_pem = std::fs::read(key_path)
        .map_err(|e| format!("cannot read the private key {}: {e}", key_path.display()))?;
    from_pem(&cert_pem, &key_pem).map_err(|e| {
        format!(
            "{e} (certificate {}, key {})",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// Build a certificate to serve from PEM text: the chain (leaf first) and its key.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!("the key file holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}")
    })?;
    let info = inspect(&chain[0])?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key cannot sign: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err("the private key does not belong to the certificate".into())
        }
        // Unknown: the key type cannot tell; the handshake will.
        Err(_) => {}
    }
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// Read names, validity and serial from a DER certificate.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        names,
        serial: cert.raw_serial_as_string(),
        self_issued: cert.subject() == cert.issuer(),
    })
}

/// The names a self-signed certificate carries: the configured ones plus the loopback names,
/// so `https://localhost` works on the machine itself.
pub fn self_signed_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in hosts
        .iter()
        .map(String::as_str)
        .chain(["localhost", "127.0.0.1", "::1"])
    {
        let n = n.to_ascii_lowercase();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Generate a self-signed certificate for `names`, valid from an hour ago for `days` days.
/// Returns the certificate and key as PEM.
pub fn generate_self_signed(names: &[String], days: u32) -> Result<(String, String), String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Cairn");
    dn.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "localhost".into()),
    );
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write `bytes` to `path` readable by the owner only, atomically: a uniquely named temporary
/// file (created `0600`) beside it, synced, renamed over it, and the directory synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: i64, not_after: i64, names: &[&str]) -> CertInfo {
        CertInfo {
            not_before,
            not_after,
            names: names.iter().map(|n| n.to_string()).collect(),
            serial: String::new(),
            self_issued: false,
        }
    }

    #[test]
    fn renewal_is_due_within_the_margin_but_never_before_the_last_third() {
        let day = 86_400;
        let ninety = info(0, 90 * day, &[]);
        assert!(!ninety.due(59 * day, 30 * day));
        assert!(ninety.due(60 * day, 30 * day));
        // A week-long certificate with a 30-day margin is renewed after two thirds, not at once.
        let week = info(0, 7 * day, &[]);
        assert!(!week.due(4 * day, 30 * day));
        assert!(week.due(5 * day, 30 * day));
    }

    #[test]
    fn names_are_covered_exactly_or_by_a_one_label_wildcard() {
        let c = info(
            0,
            1,
            &["cairn.example.com", "*.apps.example.com", "10.0.0.1"],
        );
        assert!(c.covers(&["CAIRN.example.com".into(), "10.0.0.1".into()]));
        assert!(c.covers(&["x.apps.example.com".into()]));
        assert!(!c.covers(&["a.b.apps.example.com".into()]));
        assert!(!c.covers(&["apps.example.com".into()]));
        assert!(!c.covers(&["other.example.com".into()]));
    }

    #[test]
    fn generated_certificates_load_with_their_names_and_keys_must_match() {
        let names = self_signed_names(&["cairn.test".into(), "10.9.8.7".into()]);
        assert_eq!(
            names,
            ["cairn.test", "10.9.8.7", "localhost", "127.0.0.1", "::1"]
        );
        let (cert, key) = generate_self_signed(&names, 30).unwrap();
        let loaded = from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(loaded.info.names, names);
        assert!(loaded.info.self_issued);
        let (_, other_key) = generate_self_signed(&names, 30).unwrap();
        let e = from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        assert!(from_pem(b"", key.as_bytes())
            .unwrap_err()
            .contains("no CERTIFICATE"));
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key.pem");
        write_private(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }
}
