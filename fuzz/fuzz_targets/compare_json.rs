//! The router's JSON comparison on any pair of answers and any pointers: it never panics,
//! its pointers find what serde_json's do, and a document always agrees with itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use modelship::mirror::compare::{Answer, Locate, Outcome, Pointer, judge};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    stable: &'a [u8],
    shadow: &'a [u8],
    stable_status: u16,
    shadow_status: u16,
    pointers: Vec<&'a str>,
    tolerance: f64,
}

fuzz_target!(|input: Input<'_>| {
    let pointers: Vec<Pointer> = input.pointers.iter().map(|p| Pointer::parse(p)).collect();
    let tolerance = if input.tolerance.is_finite() { input.tolerance.abs() } else { 0.0 };
    let stable = Answer::Response { status: input.stable_status, body: input.stable };
    let shadow = Answer::Response { status: input.shadow_status, body: input.shadow };
    let judgement = judge(stable, shadow, &pointers, tolerance);
    assert!(judgement.outcome.is_some());

    if let Ok(document) = serde_json::from_slice::<serde_json::Value>(input.stable) {
        for (text, pointer) in input.pointers.iter().zip(&pointers) {
            if text.is_empty() || text.starts_with('/') {
                assert_eq!(pointer.locate(&document), document.pointer(text), "{text:?}");
            }
        }
        // A document agrees with itself wherever the pointers find something in it.
        let same = Answer::Response { status: 200, body: input.stable };
        let found = pointers.iter().all(|p| p.locate(&document).is_some());
        let outcome = judge(same, same, &pointers, tolerance).outcome;
        if found && !contains_nan(&document) {
            assert_eq!(outcome, Some(Outcome::Match));
        }
    }
});

/// serde_json never parses NaN, but keep the property honest if that ever changes.
fn contains_nan(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(f64::is_nan),
        serde_json::Value::Array(a) => a.iter().any(contains_nan),
        serde_json::Value::Object(o) => o.values().any(contains_nan),
        _ => false,
    }
}
