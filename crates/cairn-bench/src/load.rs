//! A small HTTP/1.1 load generator: N connections, each sending one request at a time for a
//! fixed duration, recording every latency. Over plain TCP or TLS, keeping connections alive or
//! opening a new one (a full handshake) for every request. Lean on purpose: on a 2-core machine
//! it shares the CPU with the server it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How requests reach the server.
#[derive(Clone)]
pub struct Transport {
    /// `None`: plain HTTP.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// Open a new connection for each request (measures connection set-up, TLS handshakes).
    pub connection_per_request: bool,
}

impl Transport {
    pub fn plain() -> Transport {
        Transport {
            tls: None,
            connection_per_request: false,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(addr: SocketAddr, transport: &Transport) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match &transport.tls {
        None => Ok(Box::new(tcp)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(std::io::Error::other)?;
            Ok(Box::new(connector.connect(name, tcp).await?))
        }
    }
}

/// A TLS client that trusts `root_pem` and never resumes a session (each handshake is full).
pub fn tls_connector(root_pem: &[u8]) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Length of a complete response at the start of `buf`, if it is all there.
fn complete_response(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

/// A keep-alive GET for `path`, with extra header lines (each ending in CRLF).
pub fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n").into_bytes()
}

/// A keep-alive POST of a JSON body.
pub fn post_json(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connection(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    until: Instant,
    transport: Transport,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    'reconnect: while Instant::now() < until {
        // With a connection per request, the latency includes connecting (and the handshake).
        let opened = Instant::now();
        let Ok(mut stream) = connect(addr, &transport).await else {
            errors += 1;
            continue;
        };
        while Instant::now() < until {
            let sent = if transport.connection_per_request {
                opened
            } else {
                Instant::now()
            };
            if stream.write_all(&request[..]).await.is_err() {
                errors += 1;
                continue 'reconnect;
            }
            buf.clear();
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        continue 'reconnect;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(len) = complete_response(&buf) {
                    if !buf.starts_with(b"HTTP/1.1 200") {
                        errors += 1;
                    }
                    debug_assert_eq!(len, buf.len());
                    break;
                }
            }
            latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            if transport.connection_per_request {
                let _ = stream.shutdown().await;
                continue 'reconnect;
            }
        }
    }
    (latencies, errors)
}

pub async fn run(
    addr: SocketAddr,
    request: Vec<u8>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    run_over(addr, request, connections, duration, Transport::plain()).await
}

pub async fn run_over(
    addr: SocketAddr,
    request: Vec<u8>,
    connections: usize,
    duration: Duration,
    transport: Transport,
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let until = started + duration;
    let request = Arc::new(request);
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, request.clone(), until, transport.clone())))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await?;
        all.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        f64::from(all[i]) / 1000.0
    };
    Ok(LoadResult {
        requests: all.len() as u64,
        errors,
        requests_per_sec: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::complete_response;

    #[test]
    fn a_response_is_complete_only_with_its_whole_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(complete_response(r), Some(r.len()));
        assert_eq!(complete_response(&r[..r.len() - 1]), None);
        assert_eq!(complete_response(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
