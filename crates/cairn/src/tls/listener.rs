//! The HTTPS listener handed to `axum::serve`: a task accepts TCP connections and runs each
//! TLS handshake concurrently under `tls.handshake_timeout_secs` (at most
//! [`MAX_HANDSHAKES`] at once, [`MAX_HANDSHAKES_PER_IP`] from one address), and only finished
//! handshakes reach the HTTP server, so a slow or silent client never holds up the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{Tls, ACME_TLS_ALPN};
use crate::ops::metrics::Metrics;

/// Handshakes in progress at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;
/// Handshakes in progress from one address; more are closed at once, so one client cannot
/// take every slot.
pub const MAX_HANDSHAKES_PER_IP: u32 = 32;

/// Handshakes in progress by client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, u32>>);

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            table: self.clone(),
            ip,
        })
    }
}

struct PerIpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.table.0.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

/// Accept errors that concern one connection (the next accept works), as opposed to the
/// process running out of descriptors or memory.
fn one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(e.raw_os_error(), Some(71 | 101 | 113)) // EPROTO, ENETUNREACH, EHOSTUNREACH
}

pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: &Tls, metrics: Metrics) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let acceptor = TlsAcceptor::from(tls.server_config.clone());
        let timeout = tls.handshake_timeout;
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let per_ip = Arc::new(PerIp::default());
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) if one_connection(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::error!(error = %e, "accepting connections failed; pausing 1 s");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(ip_slot) = per_ip.enter(peer.ip()) else {
                    metrics.tls_handshake("refused");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let ip_slot = ip_slot;
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                                // A TLS-ALPN-01 validator: the handshake was the answer.
                                return;
                            }
                            metrics.tls_handshake("ok");
                            // Handed over: the slots are for handshakes, not for the queue.
                            drop(ip_slot);
                            drop(_slot);
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake("failed");
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake("timeout");
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local, ready, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
