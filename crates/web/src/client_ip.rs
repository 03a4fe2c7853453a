//! The client's IP address behind load balancers: the TCP peer, unless the peer is a proxy the
//! operator trusts, in which case the forwarding header that proxy appends is read from the right,
//! skipping every trusted hop (the rightmost address a trusted proxy saw connect is the only one
//! nobody outside could forge: RFC 7239 §7.4, and how nginx's `real_ip_recursive` and haproxy's
//! `option forwardfor` are meant to be read). Headers from an untrusted peer are ignored, so a
//! client that sends its own `X-Forwarded-For` changes nothing.
//!
//! The resolved address goes into the request's extensions before any other layer runs; every limit,
//! the audit trail and the request log read it through [`crate::ClientIp`].

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Which forwarding header the trusted proxies append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (haproxy `option forwardfor`, nginx
    /// `proxy_add_x_forwarded_for`).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
}

/// The proxies whose forwarding header is believed. Empty (the default): the TCP peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<Vec<IpNet>>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Parses CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (`192.0.2.10`).
    pub fn parse(list: &[String], header: ForwardedHeader) -> Result<Self, String> {
        let nets = list
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets: Arc::new(nets), header })
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted; then the rightmost address of
    /// the forwarding header that is not trusted. A hop that cannot be read (`unknown`, an obfuscated
    /// identifier, garbage) ends the walk at the trusted proxy that reported it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => list_values(headers, "x-forwarded-for", parse_xff_hop),
            ForwardedHeader::Forwarded => list_values(headers, "forwarded", parse_forwarded_hop),
        };
        let mut nearest = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.trusts(ip) => nearest = ip,
                Some(ip) => return ip,
                None => return nearest,
            }
        }
        nearest
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every comma-separated element of every `name` header line, in order, each parsed by `hop`.
fn list_values(headers: &HeaderMap, name: &str, hop: fn(&str) -> Option<IpAddr>) -> Vec<Option<IpAddr>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(|e| hop(e.trim()).map(canonical)).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`.
fn parse_xff_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// One `Forwarded` element (`for=192.0.2.60;proto=https;by=203.0.113.43`): its `for` address.
fn parse_forwarded_hop(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
    })?;
    let value = value.trim_matches('"');
    let host = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => value.split(':').next().filter(|_| value.matches(':').count() <= 1).unwrap_or(value),
    };
    host.parse().ok()
}

/// The client IP found for a request (read by [`crate::ClientIp`]).
#[derive(Debug, Clone, Copy)]
pub struct ResolvedClientIp(pub IpAddr);

/// Resolves the client IP of every request once, before any other layer (the request log included).
/// With no trusted proxy the TCP peer is the client and no layer is added (a layer per request costs
/// a boxed future; the peer is read where it is needed).
pub fn resolve(router: Router, trusted: TrustedProxies) -> Router {
    if trusted.is_empty() {
        return router;
    }
    router.layer(middleware::from_fn(move |mut req: Request, next: Next| {
        let trusted = trusted.clone();
        async move {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            if let Some(peer) = peer {
                let ip = trusted.client_ip(peer, req.headers());
                req.extensions_mut().insert(ResolvedClientIp(ip));
            }
            next.run(req).await
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn trusted(list: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), header).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::default().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.10"], ForwardedHeader::XForwardedFor);
        // A spoofed first entry, the real client, then a trusted inner proxy.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-for", "192.0.2.10")]);
        assert_eq!(t.client_ip(ip("10.1.2.3"), &h), ip("198.51.100.7"));
        // Every hop trusted: the leftmost one is as far as we can see.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 192.0.2.10")]);
        assert_eq!(t.client_ip(ip("10.1.2.3"), &h), ip("10.9.9.9"));
        // No header from a trusted peer: the peer.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // Garbage ends the walk at the proxy that reported it.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, bogus, 192.0.2.10")]);
        assert_eq!(t.client_ip(ip("10.1.2.3"), &h), ip("192.0.2.10"));
        // Ports and IPv6, and IPv4-mapped peers.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:4711")]);
        assert_eq!(t.client_ip(ip("::ffff:10.1.2.3"), &h), ip("2001:db8::5"));
    }

    #[test]
    fn rfc_7239_forwarded_elements() {
        let t = trusted(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        // RFC 7239 §4's examples.
        let h = headers(&[("forwarded", r#"for="_gazonk""#)]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let h = headers(&[("forwarded", r#"For="[2001:db8:cafe::17]:4711""#)]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=192.0.2.43, for=198.51.100.17, for=10.0.0.9")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.17"));
        // The other header is not read when this one is configured.
        let h = headers(&[("x-forwarded-for", "198.51.100.17")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/33".into()], ForwardedHeader::XForwardedFor).unwrap_err();
        assert!(err.contains("10.0.0.0/33"));
        assert!(TrustedProxies::parse(&["::1".into(), "192.0.2.1".into()], ForwardedHeader::Forwarded).is_ok());
    }
}
