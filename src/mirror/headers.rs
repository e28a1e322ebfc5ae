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
const HOPS: usize = 8;
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `keep_te_trailers` (a client's request), `te: trailers` stays: gRPC servers require it, and
/// HTTP/2 upstreams get it (HTTP/1.1 upstreams do not; see `upstream`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // One pass over the names finds which hop-by-hop headers are there (most messages carry
    // none, or only `Connection`), instead of a hashed lookup for each of them.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[index] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let trailers = keep_te_trailers
        && headers.get_all(header::TE).iter().any(|value| {
            value.to_str().is_ok_and(|list| {
                list.split(',')
                    .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    // `HOP_BY_HOP[0]` is `Connection`.
    if present[0]
        && let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION)
    {
        // Taken out of the map, so the names they list can be removed without copying them.
        let (_, mut values) = entry.remove_entry_mult();
        let first = values.next();
        let rest: Vec<HeaderValue> = values.collect();
        for value in first.iter().chain(&rest) {
            for name in value.to_str().unwrap_or_default().split(',') {
                // A name that is not a valid header name finds nothing.
                headers.remove(name.trim());
            }
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
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
        strip_hop_by_hop(&mut headers, false);
        // The order of different fields carries no meaning (RFC 9110 section 5.3).
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["authorization", "content-type"]);
    }

    #[test]
    fn every_connection_header_line_counts() {
        let mut headers = map(&[
            ("connection", "x-one"),
            ("connection", "X-Two , close"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-three"]);
        // Nothing hop-by-hop: nothing changes.
        let mut headers = map(&[("content-type", "a"), ("x-request-id", "1")]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn te_trailers_survives_the_hop_when_asked() {
        let mut headers = map(&[
            ("te", "trailers"),
            ("connection", "te"),
            ("content-type", "application/grpc"),
        ]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get(header::TE).unwrap(), "trailers");
        assert!(headers.get(header::CONNECTION).is_none());
        let mut headers = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get(header::TE).is_none());
        let mut headers = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut headers, true);
        assert!(headers.get(header::TE).is_none());
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
