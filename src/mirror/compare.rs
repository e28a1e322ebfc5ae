//! Comparison of stable's and the shadow's answers to the same request.
//!
//! Results, as the `result` label of `modelship_mirror_comparisons_total`:
//! - `match`: at every pointer both documents agree: strings and booleans equal, numbers within
//!   the tolerance, arrays of equal length agreeing element by element, objects with the same
//!   keys agreeing key by key, `null` with `null`.
//! - `mismatch`: both answered 2xx with JSON and some value at a pointer differs (including a
//!   pointer present in stable's answer but missing in the shadow's).
//! - `shadow_error`: stable answered 2xx but the shadow failed: connection error, timeout, or a
//!   status other than 2xx.
//! - `uncomparable`: nothing can be said about the shadow: stable failed or answered other than
//!   2xx, a body is not JSON, a pointer is missing in stable's answer, or a body was larger than
//!   the router keeps.
use serde_json::Value;

/// The result of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Mismatch,
    ShadowError,
    Uncomparable,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Match,
        Outcome::Mismatch,
        Outcome::ShadowError,
        Outcome::Uncomparable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::ShadowError => "shadow_error",
            Outcome::Uncomparable => "uncomparable",
        }
    }
}

/// What one track answered, as far as the router saw it.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// A complete response.
    Response { status: u16, body: &'a [u8] },
    /// No complete response: connection error, timeout, or a body cut short.
    Failed,
    /// A response whose body was larger than the router keeps.
    TooLarge,
}

/// A comparison with what was learnt on the way.
#[derive(Debug, Default)]
pub struct Judgement {
    pub outcome: Option<Outcome>,
    /// Absolute differences of every pair of numbers compared.
    pub abs_diffs: Vec<f64>,
    /// Stable's document, when it answered 2xx with JSON.
    pub stable: Option<Value>,
    /// The shadow's document, when it answered 2xx with JSON.
    pub shadow: Option<Value>,
}

/// Where a JSON pointer leads in a document.
pub trait Locate {
    fn locate<'a>(&self, document: &'a Value) -> Option<&'a Value>;
}

/// A pointer as a string: resolved by serde_json, which unescapes its tokens on every call.
impl Locate for String {
    fn locate<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        document.pointer(self)
    }
}

/// A JSON pointer (RFC 6901) parsed once, resolved as `Value::pointer` resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// `None` for a string that is not a pointer (it resolves to nothing).
    tokens: Option<Vec<Token>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    key: String,
    /// The token as an array index, if it is one (no sign, no leading zero).
    index: Option<usize>,
}

impl Pointer {
    pub fn parse(pointer: &str) -> Pointer {
        if pointer.is_empty() {
            return Pointer {
                tokens: Some(Vec::new()),
            };
        }
        if !pointer.starts_with('/') {
            return Pointer { tokens: None };
        }
        let tokens = pointer
            .split('/')
            .skip(1)
            .map(|raw| {
                let key = raw.replace("~1", "/").replace("~0", "~");
                let index = if key.starts_with('+') || (key.starts_with('0') && key.len() != 1) {
                    None
                } else {
                    key.parse().ok()
                };
                Token { key, index }
            })
            .collect();
        Pointer {
            tokens: Some(tokens),
        }
    }
}

impl Locate for Pointer {
    fn locate<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.tokens
            .as_ref()?
            .iter()
            .try_fold(document, |target, token| match target {
                Value::Object(map) => map.get(&token.key),
                Value::Array(list) => token.index.and_then(|i| list.get(i)),
                _ => None,
            })
    }
}

fn parse_ok(answer: Answer<'_>) -> Option<Value> {
    match answer {
        Answer::Response { status, body } if is_success(status) => {
            serde_json::from_slice(body).ok()
        }
        _ => None,
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Judges a pair of answers (see the module documentation for the rules).
pub fn judge(
    stable: Answer<'_>,
    shadow: Answer<'_>,
    pointers: &[impl Locate],
    tolerance: f64,
) -> Judgement {
    let mut judgement = Judgement {
        stable: parse_ok(stable),
        shadow: parse_ok(shadow),
        ..Default::default()
    };
    let outcome = match (stable, shadow) {
        (Answer::Response { status, .. }, _) if !is_success(status) => Outcome::Uncomparable,
        (Answer::Failed | Answer::TooLarge, _) => Outcome::Uncomparable,
        (_, Answer::Failed) => Outcome::ShadowError,
        (_, Answer::Response { status, .. }) if !is_success(status) => Outcome::ShadowError,
        (_, Answer::TooLarge) => Outcome::Uncomparable,
        _ => match (&judgement.stable, &judgement.shadow) {
            (Some(s), Some(c)) => {
                compare_documents(s, c, pointers, tolerance, &mut judgement.abs_diffs)
            }
            _ => Outcome::Uncomparable,
        },
    };
    judgement.outcome = Some(outcome);
    judgement
}

/// Compares two documents at each pointer.
pub fn compare_documents(
    stable: &Value,
    shadow: &Value,
    pointers: &[impl Locate],
    tolerance: f64,
    diffs: &mut Vec<f64>,
) -> Outcome {
    let mut agree = true;
    for pointer in pointers {
        let Some(expected) = pointer.locate(stable) else {
            return Outcome::Uncomparable;
        };
        match pointer.locate(shadow) {
            Some(actual) => agree &= values_agree(expected, actual, tolerance, diffs),
            None => agree = false,
        }
    }
    if agree {
        Outcome::Match
    } else {
        Outcome::Mismatch
    }
}

/// Whether two values agree; numeric differences are pushed to `diffs`. Every pair is visited
/// (no early return) so that all numeric differences are recorded.
pub fn values_agree(
    expected: &Value,
    actual: &Value,
    tolerance: f64,
    diffs: &mut Vec<f64>,
) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => {
                let diff = (a - b).abs();
                diffs.push(diff);
                diff <= tolerance
            }
            _ => a == b,
        },
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Array(a), Value::Array(b)) => {
            let mut agree = a.len() == b.len();
            for (x, y) in a.iter().zip(b) {
                agree &= values_agree(x, y, tolerance, diffs);
            }
            agree
        }
        (Value::Object(a), Value::Object(b)) => {
            let mut agree = a.len() == b.len();
            for (key, x) in a {
                match b.get(key) {
                    Some(y) => agree &= values_agree(x, y, tolerance, diffs),
                    None => agree = false,
                }
            }
            agree
        }
        _ => false,
    }
}

/// One predicted value, for the per-track distributions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prediction<'a> {
    Number(f64),
    Label(&'a str),
    Bool(bool),
}

/// Bounds on the walk, so an unexpected document cannot cost much.
const MAX_DEPTH: usize = 8;
const MAX_PREDICTIONS: usize = 4096;

/// Calls `f` with each scalar at or below the pointers (numbers, strings, booleans; `null`
/// and keys are skipped), depth-first, at most `MAX_PREDICTIONS` of them.
pub fn for_each_prediction<'a>(
    document: &'a Value,
    pointers: &[impl Locate],
    mut f: impl FnMut(Prediction<'a>),
) {
    let mut budget = MAX_PREDICTIONS;
    for pointer in pointers {
        if let Some(value) = pointer.locate(document) {
            walk(value, 0, &mut budget, &mut f);
        }
    }
}

fn walk<'a>(
    value: &'a Value,
    depth: usize,
    budget: &mut usize,
    f: &mut impl FnMut(Prediction<'a>),
) {
    if *budget == 0 || depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                *budget -= 1;
                f(Prediction::Number(x));
            }
        }
        Value::String(s) => {
            *budget -= 1;
            f(Prediction::Label(s));
        }
        Value::Bool(b) => {
            *budget -= 1;
            f(Prediction::Bool(*b));
        }
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|v| walk(v, depth + 1, budget, f)),
        Value::Object(map) => map.values().for_each(|v| walk(v, depth + 1, budget, f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ptrs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn cmp(stable: Value, shadow: Value, pointers: &[&str], tolerance: f64) -> (Outcome, Vec<f64>) {
        let mut diffs = Vec::new();
        let outcome = compare_documents(&stable, &shadow, &ptrs(pointers), tolerance, &mut diffs);
        (outcome, diffs)
    }

    #[test]
    fn labels_compare_exactly() {
        assert_eq!(
            cmp(
                json!({"label": "cat"}),
                json!({"label": "cat"}),
                &["/label"],
                0.5
            )
            .0,
            Outcome::Match
        );
        assert_eq!(
            cmp(
                json!({"label": "cat"}),
                json!({"label": "Cat"}),
                &["/label"],
                0.5
            )
            .0,
            Outcome::Mismatch
        );
        assert_eq!(
            cmp(json!({"ok": true}), json!({"ok": false}), &["/ok"], 0.5).0,
            Outcome::Mismatch
        );
        assert_eq!(
            cmp(json!({"x": null}), json!({"x": null}), &["/x"], 0.0).0,
            Outcome::Match
        );
    }

    #[test]
    fn numbers_compare_within_tolerance() {
        let (outcome, diffs) = cmp(
            json!({"score": 0.5}),
            json!({"score": 0.505}),
            &["/score"],
            0.01,
        );
        assert_eq!(outcome, Outcome::Match);
        assert!((diffs[0] - 0.005).abs() < 1e-12);
        let (outcome, diffs) = cmp(
            json!({"score": 0.5}),
            json!({"score": 0.52}),
            &["/score"],
            0.01,
        );
        assert_eq!(outcome, Outcome::Mismatch);
        assert!((diffs[0] - 0.02).abs() < 1e-12);
        // Integers and floats are numbers alike; zero tolerance means equal.
        assert_eq!(
            cmp(json!({"n": 3}), json!({"n": 3.0}), &["/n"], 0.0).0,
            Outcome::Match
        );
        assert_eq!(
            cmp(json!({"n": 3}), json!({"n": 4}), &["/n"], 0.0).0,
            Outcome::Mismatch
        );
    }

    #[test]
    fn types_must_agree() {
        assert_eq!(
            cmp(json!({"v": 1}), json!({"v": "1"}), &["/v"], 1.0).0,
            Outcome::Mismatch
        );
        assert_eq!(
            cmp(json!({"v": [1]}), json!({"v": 1}), &["/v"], 1.0).0,
            Outcome::Mismatch
        );
        assert_eq!(
            cmp(json!({"v": null}), json!({"v": 0}), &["/v"], 1.0).0,
            Outcome::Mismatch
        );
    }

    #[test]
    fn arrays_element_by_element() {
        let (outcome, diffs) = cmp(
            json!({"p": [0.1, 0.2, 0.3]}),
            json!({"p": [0.1, 0.25, 0.3]}),
            &["/p"],
            0.01,
        );
        assert_eq!(outcome, Outcome::Mismatch);
        assert_eq!(diffs.len(), 3, "every element is compared");
        assert_eq!(
            cmp(json!({"p": [1, 2]}), json!({"p": [1, 2, 3]}), &["/p"], 0.0).0,
            Outcome::Mismatch
        );
        assert_eq!(
            cmp(json!({"p": []}), json!({"p": []}), &["/p"], 0.0).0,
            Outcome::Match
        );
    }

    #[test]
    fn objects_structurally() {
        let stable =
            json!({"predictions": [{"label": "a", "score": 0.9}, {"label": "b", "score": 0.2}]});
        let same = json!({"predictions": [{"score": 0.9000001, "label": "a"}, {"label": "b", "score": 0.2}]});
        let flipped =
            json!({"predictions": [{"label": "a", "score": 0.9}, {"label": "a", "score": 0.8}]});
        let extra_key = json!({"predictions": [{"label": "a", "score": 0.9, "x": 1}, {"label": "b", "score": 0.2}]});
        assert_eq!(
            cmp(stable.clone(), same, &["/predictions"], 1e-3).0,
            Outcome::Match
        );
        let (outcome, diffs) = cmp(stable.clone(), flipped, &["/predictions"], 1e-3);
        assert_eq!(outcome, Outcome::Mismatch);
        assert_eq!(diffs.len(), 2);
        assert_eq!(
            cmp(stable, extra_key, &["/predictions"], 1e-3).0,
            Outcome::Mismatch
        );
    }

    #[test]
    fn pointers_select_what_counts() {
        // The version differs between tracks; comparing only the predictions ignores it.
        let stable = json!({"model_version": "v1", "predictions": [{"label": "a"}]});
        let shadow = json!({"model_version": "v2", "predictions": [{"label": "a"}]});
        assert_eq!(
            cmp(stable.clone(), shadow.clone(), &["/predictions"], 0.0).0,
            Outcome::Match
        );
        assert_eq!(
            cmp(stable.clone(), shadow.clone(), &[""], 0.0).0,
            Outcome::Mismatch,
            "the empty pointer is the whole document"
        );
        assert_eq!(
            cmp(
                stable,
                shadow,
                &["/predictions/0/label", "/model_version"],
                0.0
            )
            .0,
            Outcome::Mismatch
        );
    }

    #[test]
    fn parsed_pointers_resolve_as_serde_json_does() {
        let doc = json!({
            "a": {"b": [10, 20, {"c": true}]},
            "a/b": 1, "m~n": 2, "": 3, "01": 4, "+1": 5, "x": {"": {"": 6}},
            "list": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        });
        for pointer in [
            "",
            "/",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/2/c",
            "/a/b/3",
            "/a/b/-",
            "/a/b/01",
            "/a/b/+1",
            "/a~1b",
            "/m~0n",
            "/m~n",
            "/~01",
            "/01",
            "/+1",
            "/x//",
            "/x/",
            "/list/10",
            "/list/010",
            "/a/b/0/z",
            "no-slash",
            "/missing/deeper",
            "/a~2b",
        ] {
            assert_eq!(
                Pointer::parse(pointer).locate(&doc),
                doc.pointer(pointer),
                "{pointer:?}"
            );
        }
    }

    #[test]
    fn missing_pointers() {
        assert_eq!(
            cmp(json!({"a": 1}), json!({"a": 1}), &["/b"], 0.0).0,
            Outcome::Uncomparable,
            "missing in stable"
        );
        assert_eq!(
            cmp(json!({"b": 1}), json!({"a": 1}), &["/b"], 0.0).0,
            Outcome::Mismatch,
            "missing in shadow"
        );
        assert_eq!(
            cmp(
                json!({"a/b": 1, "m~n": 2}),
                json!({"a/b": 1, "m~n": 2}),
                &["/a~1b", "/m~0n"],
                0.0
            )
            .0,
            Outcome::Match
        );
    }

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer::Response {
            status,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn judge_statuses_and_bodies() {
        let p = ptrs(&["/label"]);
        let ok = r#"{"label":"a"}"#;
        let other = r#"{"label":"b"}"#;
        let cases = [
            (answer(200, ok), answer(200, ok), Outcome::Match),
            (answer(200, ok), answer(201, other), Outcome::Mismatch),
            (answer(200, ok), Answer::Failed, Outcome::ShadowError),
            (answer(200, ok), answer(500, ok), Outcome::ShadowError),
            (answer(200, ok), answer(404, ""), Outcome::ShadowError),
            (answer(200, ok), Answer::TooLarge, Outcome::Uncomparable),
            (
                answer(200, ok),
                answer(200, "not json"),
                Outcome::Uncomparable,
            ),
            (
                answer(200, "<html>"),
                answer(200, ok),
                Outcome::Uncomparable,
            ),
            (
                answer(200, r#"{"x":1}"#),
                answer(200, ok),
                Outcome::Uncomparable,
            ),
            (answer(503, ok), answer(200, ok), Outcome::Uncomparable),
            (answer(400, ok), answer(400, ok), Outcome::Uncomparable),
            (Answer::Failed, answer(200, ok), Outcome::Uncomparable),
            (Answer::Failed, Answer::Failed, Outcome::Uncomparable),
            (Answer::TooLarge, answer(200, ok), Outcome::Uncomparable),
        ];
        for (stable, shadow, expected) in cases {
            let judgement = judge(stable, shadow, &p, 0.0);
            assert_eq!(
                judgement.outcome,
                Some(expected),
                "{stable:?} vs {shadow:?}"
            );
        }
    }

    #[test]
    fn judge_keeps_each_tracks_document() {
        let judgement = judge(
            answer(200, r#"{"label":"a"}"#),
            answer(500, r#"{"label":"b"}"#),
            &ptrs(&["/label"]),
            0.0,
        );
        assert!(judgement.stable.is_some());
        assert!(
            judgement.shadow.is_none(),
            "an error response is no prediction"
        );
    }

    #[test]
    fn predictions_are_the_scalars_below_the_pointers() {
        let doc = json!({"v": "x", "predictions": [{"label": "a", "score": 0.75, "extra": null}, {"label": "b", "score": 1, "ok": true}]});
        let mut seen = Vec::new();
        for_each_prediction(&doc, &ptrs(&["/predictions", "/missing"]), |p| {
            seen.push(format!("{p:?}"))
        });
        seen.sort();
        assert_eq!(
            seen,
            vec![
                "Bool(true)",
                "Label(\"a\")",
                "Label(\"b\")",
                "Number(0.75)",
                "Number(1.0)"
            ]
        );
    }

    #[test]
    fn prediction_walk_is_bounded() {
        let big = Value::Array((0..10_000).map(|i| json!(i)).collect());
        let mut count = 0;
        for_each_prediction(&big, &ptrs(&[""]), |_| count += 1);
        assert_eq!(count, MAX_PREDICTIONS);
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!([deep]);
        }
        let mut count = 0;
        for_each_prediction(&deep, &ptrs(&[""]), |_| count += 1);
        assert_eq!(count, 0);
    }
}
