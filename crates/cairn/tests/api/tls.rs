//! HTTPS served by Cairn itself: self-signed certificates generated, kept and renewed;
//! certificate files reloaded when they change and refused clearly when wrong; the redirect
//! listener; TLS versions; and certificates from a real ACME server (Debian's `pebble`), by
//! HTTP-01 and TLS-ALPN-01, cached across restarts, with an unreachable CA tolerated.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;

use crate::helpers::{Backend, TestApp};

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`: (chain PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client that trusts `root_pem`, reaches `host` at `addr`, and reports the peer certificate.
fn client(root_pem: &str, host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(host, addr)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET over HTTPS; the response and the served certificate's details.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::Response, cairn::tls::CertInfo), reqwest::Error> {
    let resp = client.get(url).send().await?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a peer certificate")
        .to_vec();
    let info = cairn::tls::certs::inspect(&der.into()).unwrap();
    Ok((resp, info))
}

/// The `cairn` binary on `data`, with no settings from the environment.
fn cli(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_DATA_DIR", data)
        .env("CAIRN_LOG_LEVEL", "warn");
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_are_generated_kept_and_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = || {
        TestApp::builder(Backend::Sqlite)
            .data_dir(&data)
            .set("tls.mode", "self-signed")
            .set("tls.hosts", "cairn.test, 10.1.2.3")
            .set("tls.redirect_listen", "127.0.0.1:0")
            .spawn()
    };
    let app = start().await;
    let (cert_path, key_path) = cairn::tls::self_signed_paths(&data);
    assert_eq!(mode(&key_path), 0o600, "the key is owner-only");
    let cert_pem = std::fs::read_to_string(&cert_path).unwrap();
    let https = format!("https://cairn.test:{}", app.addr.port());
    let c = client(&cert_pem, "cairn.test", app.addr);
    let (resp, first) = fetch(&c, &format!("{https}/api/health/live"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // No HSTS for a self-signed certificate (it would bind every local port of `localhost`).
    assert!(resp.headers().get("strict-transport-security").is_none());
    for name in ["cairn.test", "10.1.2.3", "localhost", "127.0.0.1", "::1"] {
        assert!(
            first.names.contains(&name.to_owned()),
            "{name} in {:?}",
            first.names
        );
    }
    let days = (first.not_after - first.not_before) as f64 / 86_400.0;
    assert!((89.0..=91.0).contains(&days), "valid for {days} days");
    // The same certificate answers for localhost.
    let local = client(&cert_pem, "localhost", app.addr);
    let (resp, _) = fetch(
        &local,
        &format!("https://localhost:{}/api/health", app.addr.port()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // TLS 1.2 clients are served by default.
    let tls12 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("cairn.test", app.addr)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let resp = tls12
        .get(format!("{https}/api/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP on the HTTPS port gets no page.
    let plain = reqwest::get(format!("http://{}/api/health/live", app.addr)).await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // The redirect listener: challenges it does not hold are 404, everything else goes to HTTPS.
    let redirect = app.redirect_addr.expect("a redirect listener");
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("cairn.test", redirect)
        .build()
        .unwrap();
    let resp = plain
        .post(format!(
            "http://cairn.test:{}/api/auth/sign-in?next=%2Fx",
            redirect.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!(
            "https://cairn.test:{}/api/auth/sign-in?next=%2Fx",
            app.addr.port()
        )
        .as_str()
    );
    let resp = plain
        .get(format!(
            "http://cairn.test:{}/.well-known/acme-challenge/nope",
            redirect.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // `cairn health` (the container health check) speaks HTTPS to it.
    let mut health = cli(&data);
    health.args([
        "health",
        "--url",
        &format!("https://127.0.0.1:{}/api/health", app.addr.port()),
    ]);
    let health = tokio::task::spawn_blocking(move || health.output().unwrap())
        .await
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    app.stop().await.unwrap();

    // `cairn doctor` reads the certificate: its names and days left.
    let out = cli(&data)
        .args([
            "doctor",
            "--json",
            "--set",
            "tls.mode=self-signed",
            "--set",
            "tls.hosts=cairn.test",
        ])
        .output()
        .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cert = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "tls certificate")
        .unwrap_or_else(|| panic!("no certificate finding in {findings}"));
    assert_eq!(cert["level"], "ok", "{cert}");
    let text = cert["finding"].as_str().unwrap_or_default().to_owned() + &cert.to_string();
    assert!(
        text.contains("cairn.test") && text.contains("expires in"),
        "{cert}"
    );

    // A restart keeps the certificate.
    let app = start().await;
    let c = client(&cert_pem, "cairn.test", app.addr);
    let (_, again) = fetch(
        &c,
        &format!("https://cairn.test:{}/api/health/live", app.addr.port()),
    )
    .await
    .unwrap();
    assert_eq!(again.serial, first.serial);
    app.stop().await.unwrap();

    // One due for renewal (88 of its 90 days gone) is replaced at start.
    let names: Vec<String> = ["cairn.test", "10.1.2.3", "localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut params = CertificateParams::new(names).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(88);
    params.not_after = now + time::Duration::days(2);
    let key = KeyPair::generate().unwrap();
    let (old_cert, old_key) = (params.self_signed(&key).unwrap().pem(), key.serialize_pem());
    write(&cert_path, &old_cert);
    write(&key_path, &old_key);
    let old = cairn::tls::certs::from_pem(old_cert.as_bytes(), old_key.as_bytes()).unwrap();
    let app = start().await;
    let renewed_pem = std::fs::read_to_string(&cert_path).unwrap();
    let c = client(&renewed_pem, "cairn.test", app.addr);
    let (_, renewed) = fetch(
        &c,
        &format!("https://cairn.test:{}/api/health/live", app.addr.port()),
    )
    .await
    .unwrap();
    assert_ne!(renewed.serial, old.info.serial);
    assert!(renewed.not_after > old.info.not_after + 80 * 86_400);
    app.stop().await.unwrap();

    // With `tls.min_version = 1.3`, a TLS 1.2 client is refused.
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&data)
        .set("tls.mode", "self-signed")
        .set("tls.hosts", "cairn.test, 10.1.2.3")
        .set("tls.min_version", "1.3")
        .spawn()
        .await;
    let tls12 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(renewed_pem.as_bytes()).unwrap())
        .resolve("cairn.test", app.addr)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let refused = tls12
        .get(format!(
            "https://cairn.test:{}/api/health/live",
            app.addr.port()
        ))
        .send()
        .await;
    assert!(refused.is_err(), "TLS 1.2 must be refused");
    let c = client(&renewed_pem, "cairn.test", app.addr);
    let (resp, _) = fetch(
        &c,
        &format!("https://cairn.test:{}/api/health/live", app.addr.port()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_reload_on_change_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("Cairn test CA");
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    let (a_cert, a_key) = ca.leaf(&["cairn.test"]);
    write(&cert, &a_cert);
    write(&key, &a_key);
    let builder = |cert: &Path, key: &Path| {
        TestApp::builder(Backend::Sqlite)
            .set("tls.mode", "files")
            .set("tls.cert_file", cert.to_str().unwrap())
            .set("tls.key_file", key.to_str().unwrap())
            .set("tls.reload_check_secs", "1")
    };
    let app = builder(&cert, &key).spawn().await;
    let url = format!("https://cairn.test:{}/api/health/live", app.addr.port());
    let a = cairn::tls::certs::from_pem(a_cert.as_bytes(), a_key.as_bytes()).unwrap();
    let served = |expect: String| {
        let root = ca.pem.clone();
        let addr = app.addr;
        let url = url.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                // A fresh client each time: no pooled connection or resumed session hides
                // the new certificate.
                let c = client(&root, "cairn.test", addr);
                let (resp, info) = fetch(&c, &url).await.unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(
                    resp.headers()["strict-transport-security"],
                    "max-age=31536000; includeSubDomains"
                );
                if info.serial == expect {
                    return;
                }
                assert!(Instant::now() < deadline, "still serving {}", info.serial);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    served(a.info.serial.clone()).await;

    // New files are picked up without a restart.
    let (b_cert, b_key) = ca.leaf(&["cairn.test"]);
    let b = cairn::tls::certs::from_pem(b_cert.as_bytes(), b_key.as_bytes()).unwrap();
    write(&key, &b_key);
    write(&cert, &b_cert);
    served(b.info.serial.clone()).await;

    // A broken file is not loaded: the previous certificate stays, and the failure is counted.
    let before = renewal_failures(&metrics(app.addr).await);
    write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let metrics = wait_for_failures_above(app.addr, before).await;
    assert!(metrics.contains(&format!(
        "cairn_tls_certificate_expiry_timestamp_seconds {}",
        b.info.not_after
    )));
    assert!(metrics.contains("cairn_tls_handshakes_total{result=\"ok\"}"));
    served(b.info.serial.clone()).await;
    app.stop().await.unwrap();

    // At start, wrong files are a clear error naming them.
    let missing = tmp.path().join("missing.pem");
    let e = builder(&missing, &key)
        .try_spawn()
        .await
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("cannot read the certificate") && text.contains("missing.pem"),
        "{text}"
    );
    let (_, other_key) = ca.leaf(&["cairn.test"]);
    let other = tmp.path().join("other-key.pem");
    write(&other, &other_key);
    write(&cert, &b_cert);
    let e = builder(&cert, &other)
        .try_spawn()
        .await
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("does not belong to the certificate"),
        "{e}"
    );
    let e = builder(&cert, &cert)
        .try_spawn()
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no usable private key"), "{e}");
}

/// `cairn serve` reloads certificate files at SIGHUP (what `systemctl reload` sends) without
/// waiting for the change check, and keeps serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificate_files_in_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("Cairn test CA");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let (a_cert, a_key) = ca.leaf(&["cairn.test"]);
    write(&cert, &a_cert);
    write(&key, &a_key);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = cli(&tmp.path().join("data"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--set", "tls.mode=files"])
        .args(["--set", &format!("tls.cert_file={}", cert.display())])
        .args(["--set", &format!("tls.key_file={}", key.display())])
        // Far beyond the test: only the signal can cause the reload.
        .args(["--set", "tls.reload_check_secs=3600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://cairn.test:{port}/api/health/live");
    let serial = |expect: String| {
        let (root, url) = (ca.pem.clone(), url.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok((resp, info)) = fetch(&client(&root, "cairn.test", addr), &url).await {
                    assert_eq!(resp.status(), 200);
                    if info.serial == expect {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "never served {expect}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let a = cairn::tls::certs::from_pem(a_cert.as_bytes(), a_key.as_bytes()).unwrap();
    serial(a.info.serial.clone()).await;
    let (b_cert, b_key) = ca.leaf(&["cairn.test"]);
    let b = cairn::tls::certs::from_pem(b_cert.as_bytes(), b_key.as_bytes()).unwrap();
    write(&key, &b_key);
    write(&cert, &b_cert);
    let hup = Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    serial(b.info.serial.clone()).await;
    assert!(
        server.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the server"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Pebble (Let's Encrypt's test CA) and its DNS stub, which answers 127.0.0.1 for every name.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: u16,
    /// The CA that signed pebble's own HTTPS certificate.
    wfe_root: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pebble_available() -> bool {
    let found = Command::new("pebble")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    crate::helpers::peer_present(
        found,
        "CAIRN_TEST_REQUIRE_PEBBLE",
        "`pebble` is not installed (scripts/services.sh installs it)",
    )
}

impl Pebble {
    /// Start pebble, validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    async fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        let ca = Ca::new("pebble WFE test CA");
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let wfe_root = dir.join("wfe-root.pem");
        std::fs::write(&wfe_root, &ca.pem).unwrap();
        std::fs::write(dir.join("wfe-cert.pem"), cert).unwrap();
        std::fs::write(dir.join("wfe-key.pem"), key).unwrap();
        let (wfe, management, dns) = (free_port(), free_port(), free_udp_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{wfe}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("wfe-cert.pem"),
            "privateKey": dir.join("wfe-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        let p = Pebble {
            children: vec![dns_server, pebble],
            directory: format!("https://localhost:{wfe}/dir"),
            management,
            wfe_root,
        };
        let c = client(
            &ca.pem,
            "localhost",
            SocketAddr::from(([127, 0, 0, 1], wfe)),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.get(&p.directory).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start; see {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// Pebble's issuing root (regenerated at every start).
    async fn root(&self) -> String {
        let ca = std::fs::read_to_string(&self.wfe_root).unwrap();
        client(
            &ca,
            "localhost",
            SocketAddr::from(([127, 0, 0, 1], self.management)),
        )
        .get(format!("https://localhost:{}/roots/0", self.management))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    }
}

/// Wait until the server presents a certificate that chains to `root`.
async fn wait_for_issued(root: &str, host: &str, addr: SocketAddr) -> cairn::tls::CertInfo {
    let url = format!("https://{host}:{}/api/health/live", addr.port());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match fetch(&client(root, host, addr), &url).await {
            Ok((resp, info)) => {
                assert_eq!(resp.status(), 200);
                return info;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no ACME certificate served: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificates_come_from_a_real_acme_server() {
    if !pebble_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // HTTP-01, answered on the redirect listener.
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_port = https.local_addr().unwrap().port();
    let http_port = free_port();
    let pebble_dir = tmp.path().join("pebble-http");
    std::fs::create_dir_all(&pebble_dir).unwrap();
    let pebble = Pebble::start(&pebble_dir, http_port, https_port).await;
    let data = tmp.path().join("data-http");
    let acme = |data: &Path, directory: &str, ca_root: &Path, challenge: &str| {
        TestApp::builder(Backend::Sqlite)
            .data_dir(data)
            .set("tls.mode", "acme")
            .set("tls.hosts", "cairn.test")
            .set("tls.acme_directory", directory)
            .set("tls.acme_ca_root", ca_root.to_str().unwrap())
            .set("tls.acme_email", "ops@cairn.test")
            .set("tls.acme_challenge", challenge)
    };
    let app = acme(&data, &pebble.directory, &pebble.wfe_root, "http-01")
        .set("tls.redirect_listen", &format!("127.0.0.1:{http_port}"))
        .listener(https)
        .spawn()
        .await;
    let root = pebble.root().await;
    let issued = wait_for_issued(&root, "cairn.test", app.addr).await;
    assert_eq!(issued.names, vec!["cairn.test".to_owned()]);
    assert!(!issued.self_issued);
    let dir = cairn::tls::acme_dir(&data);
    for f in ["account.json", "certificate.json"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} is owner-only");
    }
    app.stop().await.unwrap();
    let wfe_root = pebble.wfe_root.clone();
    let directory = pebble.directory.clone();
    drop(pebble);

    // A restart serves the cached certificate while the CA is gone, even with a name added
    // (the renewal that would add it fails, is counted, and is retried later).
    let app = acme(&data, &directory, &wfe_root, "http-01")
        .set("tls.hosts", "cairn.test, www.cairn.test")
        .set("tls.redirect_listen", "127.0.0.1:0")
        .spawn()
        .await;
    let again = wait_for_issued(&root, "cairn.test", app.addr).await;
    assert_eq!(again.serial, issued.serial);
    wait_for_failures_above(app.addr, 0).await;
    app.stop().await.unwrap();

    // TLS-ALPN-01, answered on the HTTPS port itself.
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_port = https.local_addr().unwrap().port();
    let pebble_dir = tmp.path().join("pebble-alpn");
    std::fs::create_dir_all(&pebble_dir).unwrap();
    let pebble = Pebble::start(&pebble_dir, free_port(), https_port).await;
    let data = tmp.path().join("data-alpn");
    let app = acme(&data, &pebble.directory, &pebble.wfe_root, "tls-alpn-01")
        .listener(https)
        .spawn()
        .await;
    let root = pebble.root().await;
    let issued = wait_for_issued(&root, "cairn.test", app.addr).await;
    assert_eq!(issued.names, vec!["cairn.test".to_owned()]);
    app.stop().await.unwrap();

    // The CA unreachable and no certificate yet: the server still starts and serves a
    // temporary self-signed one, and counts the failed attempt (retried with backoff).
    let data = tmp.path().join("data-down");
    let app = acme(
        &data,
        &format!("https://localhost:{}/dir", free_port()),
        &wfe_root,
        "tls-alpn-01",
    )
    .spawn()
    .await;
    let any = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap();
    let (resp, info) = fetch(
        &any,
        &format!("https://127.0.0.1:{}/metrics", app.addr.port()),
    )
    .await
    .unwrap();
    assert!(info.self_issued && info.names.contains(&"cairn.test".to_owned()));
    let _ = resp.text().await.unwrap();
    wait_for_failures_above(app.addr, 0).await;
    app.stop().await.unwrap();
}

/// The server's `/metrics` text, over HTTPS from the loopback.
async fn metrics(addr: SocketAddr) -> String {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("https://127.0.0.1:{}/metrics", addr.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn renewal_failures(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_tls_renewal_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Wait until the server has counted more failed attempts to obtain, renew or reload its
/// certificate than `before`; the metrics then.
async fn wait_for_failures_above(addr: SocketAddr, before: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(addr).await;
        if renewal_failures(&text) > before {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the failed attempt was not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
