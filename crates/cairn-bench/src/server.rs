//! Starting and stopping a real `cairn serve` for measurement.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// From spawning the process to its first 200 on `/api/health`.
    pub ready_after: Duration,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One blocking `GET /api/health`; true on 200.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /api/health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Clock ticks per second, as `/proc/*/stat` counts CPU time.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One blocking `GET /api/health` over TLS, trusting the server's self-signed certificate once
/// it is written; true on 200.
fn healthy_tls(addr: SocketAddr, cert: &Path) -> bool {
    use rustls::pki_types::pem::PemObject;
    let Ok(pem) = std::fs::read(cert) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions() else {
        return false;
    };
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let Ok(name) = rustls::pki_types::ServerName::try_from("localhost") else {
        return false;
    };
    let Ok(conn) = rustls::ClientConnection::new(std::sync::Arc::new(config), name) else {
        return false;
    };
    let Ok(tcp) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    if tls
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    tls.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Server {
    pub fn start(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        Self::start_inner(binary, data_dir, env, false)
    }

    /// As [`start`](Self::start), for a server with `tls.mode = self-signed`.
    pub fn start_tls(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        Self::start_inner(binary, data_dir, env, true)
    }

    fn start_inner(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
        tls: bool,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .env("CAIRN_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAIRN_") && !k.starts_with("CAIRN_BENCH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CAIRN_LOG_FORMAT", "json");
        cmd.env(
            "CAIRN_LOG_LEVEL",
            std::env::var("CAIRN_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Server {
            child,
            addr,
            ready_after: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(30);
        let cert = data_dir.join("tls").join("self-signed.crt");
        loop {
            let up = if tls {
                healthy_tls(addr, &cert)
            } else {
                healthy(addr)
            };
            if up {
                server.ready_after = started.elapsed();
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("cairn exited early with {status}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "cairn did not become healthy in 30 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_kb("VmRSS:")
    }

    /// The most resident memory the process has used since it started.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kb("VmHWM:")
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / clock_ticks())
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "cairn exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                anyhow::bail!("cairn did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
