//! The Open Inference Protocol decoder and comparison on any bytes: never a panic, a
//! decoded answer agrees with itself, and the recorded differences stay within their bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_oip::proto::ModelInferResponse;
use modelship_oip::{compare, compare_grpc_bodies, decode_unary, for_each_output_value};

const MAX_MESSAGE: usize = 1 << 20;
const MAX_DIFFS: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The first half is stable's body, the rest the shadow's.
    let (stable, shadow) = data.split_at(data.len() / 2);
    if let Ok(comparison) = compare_grpc_bodies(stable, shadow, 1e-6, MAX_DIFFS, MAX_MESSAGE) {
        assert!(comparison.abs_diffs.len() <= MAX_DIFFS);
    }
    if let Ok(response) = decode_unary::<ModelInferResponse>(data, MAX_MESSAGE) {
        // An answer agrees with itself unless its contents cannot be read (an element count
        // that does not match the shape, a raw buffer of the wrong length).
        let itself = compare(&response, &response, 0.0, MAX_DIFFS);
        assert!(
            itself.agree || itself.reason == Some("contents"),
            "{response:?} disagrees with itself: {:?}",
            itself.reason
        );
        let mut seen = 0;
        for_each_output_value(&response, 100, |_, _| seen += 1);
        assert!(seen <= 100);
    }
});
