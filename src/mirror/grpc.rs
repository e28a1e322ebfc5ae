//! gRPC answers: telling them apart, their status, and their comparison.
//!
//! A gRPC answer succeeded only with HTTP status 200 and `grpc-status: 0`, found in the
//! trailers or, for a trailers-only answer, in the headers. A unary answer's body is one
//! length-prefixed message (a 1-byte compression flag and a 4-byte big-endian length); the
//! comparison looks at the messages' bytes.
//!
//! Outcomes, as for JSON (see `compare`): stable failed, did not succeed, or sent a body that
//! is not one uncompressed message: `uncomparable`; the shadow failed or did not succeed:
//! `shadow_error`; its body too large or not one uncompressed message: `uncomparable`;
//! otherwise `match` or `mismatch`.
use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

use super::compare::{Answer, Judgement, Outcome};
use super::headers::strip_hop_by_hop;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether a message is gRPC, by its content type (`application/grpc`, `application/grpc+proto`
/// and the like; not gRPC-Web, which is another protocol).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim();
            value
                .get(..16)
                .is_some_and(|head| head.eq_ignore_ascii_case("application/grpc"))
                && matches!(value.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The `grpc-status` in `headers`, if there is a valid one.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// What the router learns of a gRPC answer besides its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grpc {
    /// `grpc-status`, once seen.
    pub status: Option<u32>,
}

impl Grpc {
    /// `Some` for a gRPC answer, with the status of a trailers-only answer if it is one.
    pub fn of(headers: &HeaderMap) -> Option<Grpc> {
        is_grpc(headers).then(|| Grpc {
            status: status(headers),
        })
    }

    /// Takes the status from the answer's trailers.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(status) = status(trailers) {
            self.status = Some(status);
        }
    }

    fn is_ok(self) -> bool {
        self.status == Some(0)
    }
}

/// Removes hop-by-hop headers from a client's request, keeping `te: trailers`: gRPC servers
/// require it, and HTTP/2 upstreams get it (HTTP/1.1 upstreams do not; see `upstream`).
pub fn strip_hop_by_hop_keeping_te_trailers(headers: &mut HeaderMap) {
    let trailers = headers.get_all(header::TE).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The message of a unary gRPC body: exactly one uncompressed length-prefixed message.
fn unary_message(body: &[u8]) -> Option<&[u8]> {
    let (prefix, message) = body.split_at_checked(5)?;
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    (prefix[0] == 0 && u32::try_from(message.len()) == Ok(length)).then_some(message)
}

/// The body of a successful gRPC answer: HTTP status 200 and `grpc-status: 0`.
fn succeeded<'a>(answer: Answer<'a>, grpc: Option<Grpc>) -> Option<&'a [u8]> {
    match answer {
        Answer::Response { status: 200, body } if grpc.is_some_and(Grpc::is_ok) => Some(body),
        _ => None,
    }
}

/// Judges a pair of gRPC answers (see the module documentation for the rules). `grpc` is
/// what each side's answer said of itself; `None` for an answer that is not gRPC.
pub fn judge(
    stable: (Answer<'_>, Option<Grpc>),
    shadow: (Answer<'_>, Option<Grpc>),
    tolerance: f64,
) -> Judgement {
    let mut abs_diffs = Vec::new();
    let outcome = match (succeeded(stable.0, stable.1), shadow.0) {
        (None, _) => Outcome::Uncomparable,
        (Some(_), Answer::TooLarge) => Outcome::Uncomparable,
        (Some(stable), shadow_answer) => match succeeded(shadow_answer, shadow.1) {
            None => Outcome::ShadowError,
            Some(shadow) => match (unary_message(stable), unary_message(shadow)) {
                (Some(stable), Some(shadow)) => {
                    let outcome;
                    (outcome, abs_diffs) = judge_grpc(stable, shadow, tolerance);
                    outcome
                }
                _ => Outcome::Uncomparable,
            },
        },
    };
    Judgement {
        outcome: Some(outcome),
        abs_diffs,
        ..Default::default()
    }
}

/// Compares the messages of two successful unary answers: for now their bytes, exactly (the
/// tolerance is for a comparison that knows the messages' fields). Returns the outcome and
/// the absolute differences of the numbers compared.
pub fn judge_grpc(stable: &[u8], shadow: &[u8], _tolerance: f64) -> (Outcome, Vec<f64>) {
    let outcome = if stable == shadow {
        Outcome::Match
    } else {
        Outcome::Mismatch
    };
    (outcome, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    const OK: Option<Grpc> = Some(Grpc { status: Some(0) });

    #[test]
    fn grpc_by_content_type() {
        for (value, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            let map = headers(&[("content-type", value)]);
            assert_eq!(is_grpc(&map), grpc, "{value}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn status_from_headers_then_trailers() {
        let mut grpc = Grpc::of(&headers(&[("content-type", "application/grpc")])).unwrap();
        assert_eq!(grpc.status, None);
        grpc.trailers(&headers(&[("grpc-status", "0")]));
        assert_eq!(grpc.status, Some(0));
        // Trailers-only: the status is in the headers.
        let grpc = Grpc::of(&headers(&[
            ("content-type", "application/grpc"),
            ("grpc-status", "13"),
            ("grpc-message", "boom"),
        ]))
        .unwrap();
        assert_eq!(grpc.status, Some(13));
        assert!(Grpc::of(&headers(&[("content-type", "application/json")])).is_none());
        assert_eq!(status(&headers(&[("grpc-status", "x")])), None);
    }

    #[test]
    fn te_trailers_survives_the_hop() {
        let mut map = headers(&[
            ("te", "trailers"),
            ("connection", "te"),
            ("content-type", "application/grpc"),
        ]);
        strip_hop_by_hop_keeping_te_trailers(&mut map);
        assert_eq!(map.get(header::TE).unwrap(), "trailers");
        assert!(map.get(header::CONNECTION).is_none());
        let mut map = headers(&[("te", "gzip")]);
        strip_hop_by_hop_keeping_te_trailers(&mut map);
        assert!(map.get(header::TE).is_none());
    }

    #[test]
    fn unary_messages() {
        assert_eq!(unary_message(&framed(b"abc")), Some(&b"abc"[..]));
        assert_eq!(unary_message(&framed(b"")), Some(&b""[..]));
        assert_eq!(unary_message(b"\0\0\0"), None);
        // Compressed, cut short, or two messages.
        assert_eq!(unary_message(b"\x01\0\0\0\x01a"), None);
        assert_eq!(unary_message(b"\0\0\0\0\x02a"), None);
        let mut two = framed(b"a");
        two.extend(framed(b"b"));
        assert_eq!(unary_message(&two), None);
    }

    #[test]
    fn judges_status_then_bytes() {
        let a = framed(b"\x0a\x01a");
        let b = framed(b"\x0a\x01b");
        fn ok(body: &[u8]) -> (Answer<'_>, Option<Grpc>) {
            (Answer::Response { status: 200, body }, OK)
        }
        let outcome = |stable, shadow| judge(stable, shadow, 0.0).outcome.unwrap();
        assert_eq!(outcome(ok(&a), ok(&a)), Outcome::Match);
        assert_eq!(outcome(ok(&a), ok(&b)), Outcome::Mismatch);
        let failed = Some(Grpc { status: Some(13) });
        let error = (
            Answer::Response {
                status: 200,
                body: &[],
            },
            failed,
        );
        assert_eq!(outcome(ok(&a), error), Outcome::ShadowError);
        assert_eq!(
            outcome(ok(&a), (Answer::Failed, None)),
            Outcome::ShadowError
        );
        // No status at all, or an HTTP error: not a success either.
        let silent = (
            Answer::Response {
                status: 200,
                body: &a[..],
            },
            Some(Grpc { status: None }),
        );
        assert_eq!(outcome(ok(&a), silent), Outcome::ShadowError);
        let http = (
            Answer::Response {
                status: 503,
                body: &a[..],
            },
            OK,
        );
        assert_eq!(outcome(ok(&a), http), Outcome::ShadowError);
        let json = (
            Answer::Response {
                status: 200,
                body: &a[..],
            },
            None,
        );
        assert_eq!(outcome(ok(&a), json), Outcome::ShadowError);
        assert_eq!(
            outcome(ok(&a), (Answer::TooLarge, None)),
            Outcome::Uncomparable
        );
        assert_eq!(outcome(error, ok(&a)), Outcome::Uncomparable);
        assert_eq!(outcome(ok(b"\x01\0\0\0\0"), ok(&a)), Outcome::Uncomparable);
    }
}
