//! Header rules for forwarding: hop-by-hop headers stay on their hop, and mirrored copies lose
//! credentials and say that they are copies.
use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

/// Marks a request as a mirrored copy, so the shadow can tell it from real traffic.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-modelship-shadow");

/// Credentials a copy never carries: the shadow is a model being tried, not one trusted with
/// clients' secrets. The router's `--strip-headers` default, and what the operator always passes.
pub const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
];

/// Headers that belong to one connection (RFC 9110 section 7.6.1), plus the de-facto ones.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests have no `Connection` header: no allocation then.
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Headers of the copy sent to the shadow: the forwarded headers less `strip`, plus the marker.
pub fn shadow_headers(forwarded: &HeaderMap, strip: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(forwarded.len() + 1);
    for (name, value) in forwarded {
        if !strip.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-hop", "1"),
            ("content-type", "application/json"),
            ("authorization", "Bearer t"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type", "authorization"]);
    }

    #[test]
    fn shadow_copy_loses_credentials_and_is_marked() {
        let forwarded = map(&[
            ("authorization", "Bearer t"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("content-type", "application/json"),
            ("x-request-id", "42"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        let strip = [header::AUTHORIZATION, header::COOKIE];
        let copy = shadow_headers(&forwarded, &strip);
        assert!(copy.get(header::AUTHORIZATION).is_none());
        assert!(copy.get(header::COOKIE).is_none());
        assert_eq!(copy.get("x-modelship-shadow").unwrap(), "1");
        assert_eq!(copy.get("x-request-id").unwrap(), "42");
        assert_eq!(copy.get_all("accept").iter().count(), 2);
        // The original is untouched: stable still gets the credentials.
        assert_eq!(forwarded.get(header::AUTHORIZATION).unwrap(), "Bearer t");
    }

    #[test]
    fn strip_list_is_configurable() {
        let forwarded = map(&[("authorization", "Bearer t"), ("x-api-key", "k")]);
        let copy = shadow_headers(&forwarded, &[HeaderName::from_static("x-api-key")]);
        assert!(copy.get("x-api-key").is_none());
        assert_eq!(copy.get(header::AUTHORIZATION).unwrap(), "Bearer t");
    }

    #[test]
    fn a_client_cannot_forge_the_marker_away() {
        let forwarded = map(&[("x-modelship-shadow", "0")]);
        let copy = shadow_headers(&forwarded, &[]);
        assert_eq!(
            copy.get_all("x-modelship-shadow")
                .iter()
                .collect::<Vec<_>>(),
            vec!["1"]
        );
    }
}
