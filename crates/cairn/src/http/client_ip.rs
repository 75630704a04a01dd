//! The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy. Forwarded
//! headers from anyone else are ignored, so a client cannot choose its own address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request is attributed to (rate limits, audit, metrics access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Whether the request reached Cairn over HTTPS, as far as Cairn can trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHttps(pub bool);

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> (ClientIp, ForwardedHttps) {
    if proxies.is_empty() || !trusted(peer, proxies) {
        return (ClientIp(peer), ForwardedHttps(false));
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(ip, proxies) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().map(str::trim) == Some("https"));
    (ClientIp(client), ForwardedHttps(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let (ip, https) = resolve(peer, &headers("1.2.3.4"), &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(ip.0, peer);
        assert!(!https.0);
    }

    #[test]
    fn the_rightmost_untrusted_hop_behind_trusted_proxies_is_the_client() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let (ip, https) = resolve(peer, &headers("6.6.6.6, 198.51.100.7, 10.0.0.5"), &proxies);
        assert_eq!(ip.0, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(https.0);
    }
}
