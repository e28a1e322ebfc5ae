//! Whether two answers to the same request agree: outputs matched by name, equal datatypes
//! and shapes, and elements equal (numbers within an absolute tolerance).
use std::collections::HashMap;

use crate::frame::{DecodeError, decode_unary};
use crate::proto::ModelInferResponse;
use crate::tensor::{EvenSample, Scalar, Tensor};

/// The outcome of comparing two answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub agree: bool,
    /// The first disagreement, following the stable answer's outputs in order:
    /// `output_missing`, `datatype`, `shape`, `contents`, then `extra_output` (an output
    /// only the shadow has).
    pub reason: Option<&'static str>,
    /// Absolute differences of floating-point element pairs (FP16, BF16, FP32, FP64), at most
    /// `max_diffs` of them, picked evenly over every such pair of the outputs whose datatype,
    /// shape and element count agree. 0 for equal values and for two NaNs; infinite when
    /// only one side is NaN.
    pub abs_diffs: Vec<f64>,
}

/// Which answer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Shadow,
}

impl Side {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Shadow => "shadow",
        }
    }
}

/// The absolute difference of two floats: 0 when equal (infinities included) or both NaN.
fn abs_diff(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_nan() || b.is_nan() {
        f64::INFINITY
    } else {
        (a - b).abs()
    }
}

/// Whether two floats agree: NaN only with NaN, an infinity only with itself, finite numbers
/// within the tolerance.
fn floats_agree(a: f64, b: f64, tolerance: f64) -> bool {
    if a.is_finite() && b.is_finite() {
        (a - b).abs() <= tolerance
    } else {
        a == b || (a.is_nan() && b.is_nan())
    }
}

/// Compares two answers to the same request. Floats agree within the absolute `tolerance`
/// (a NaN or negative one counts as 0), NaN only with NaN and an infinity only with itself;
/// integers, booleans and bytes agree when equal. An output whose datatype is not one of the
/// protocol's, or whose elements do not match its shape, disagrees as `contents`.
/// Every element pair is checked; only the recorded differences are bounded by `max_diffs`.
pub fn compare(
    stable: &ModelInferResponse,
    shadow: &ModelInferResponse,
    tolerance: f64,
    max_diffs: usize,
) -> Comparison {
    let tolerance = if tolerance >= 0.0 { tolerance } else { 0.0 };
    // Same-named outputs pair up in order of appearance; a shadow output left over is extra.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, output) in shadow.outputs.iter().enumerate().rev() {
        by_name.entry(output.name.as_str()).or_default().push(i);
    }
    let mut reasons: Vec<Option<&'static str>> = Vec::with_capacity(stable.outputs.len());
    let mut pairs = Vec::new();
    for (i, output) in stable.outputs.iter().enumerate() {
        let Some(j) = by_name
            .get_mut(output.name.as_str())
            .and_then(|indices| indices.pop())
        else {
            reasons.push(Some("output_missing"));
            continue;
        };
        let other = &shadow.outputs[j];
        if output.datatype != other.datatype {
            reasons.push(Some("datatype"));
        } else if output.shape != other.shape {
            reasons.push(Some("shape"));
        } else if let (Some(a), Some(b)) = (Tensor::of(stable, i), Tensor::of(shadow, j)) {
            pairs.push((reasons.len(), a, b));
            reasons.push(None);
        } else {
            reasons.push(Some("contents"));
        }
    }
    let extra = by_name.values().any(|indices| !indices.is_empty());

    let floats: usize = pairs
        .iter()
        .filter(|(_, a, _)| a.is_float())
        .map(|(_, a, _)| a.len)
        .sum();
    let mut sample = EvenSample::new(floats, max_diffs);
    let mut abs_diffs = Vec::with_capacity(max_diffs.min(floats));
    let mut k = 0;
    for (slot, a, b) in &pairs {
        let mut agree = true;
        let mut compared = 0;
        for (x, y) in a.elements().zip(b.elements()) {
            compared += 1;
            agree &= match (x, y) {
                (Scalar::Float(x), Scalar::Float(y)) => {
                    if sample.take(k) {
                        abs_diffs.push(abs_diff(x, y));
                    }
                    k += 1;
                    floats_agree(x, y, tolerance)
                }
                (x, y) => x == y,
            };
        }
        // The views checked both lengths; a short read would still be a disagreement.
        if !agree || compared != a.len {
            reasons[*slot] = Some("contents");
        }
    }

    let reason = reasons
        .into_iter()
        .flatten()
        .next()
        .or(extra.then_some("extra_output"));
    Comparison {
        agree: reason.is_none(),
        reason,
        abs_diffs,
    }
}

/// Decodes two unary gRPC bodies (see [`decode_unary`]) and compares their answers, or says
/// which side could not be decoded (the stable one first). Never panics, whatever the bodies.
pub fn compare_grpc_bodies(
    stable: &[u8],
    shadow: &[u8],
    tolerance: f64,
    max_diffs: usize,
    max_message: usize,
) -> Result<Comparison, (Side, DecodeError)> {
    let stable: ModelInferResponse =
        decode_unary(stable, max_message).map_err(|e| (Side::Stable, e))?;
    let shadow: ModelInferResponse =
        decode_unary(shadow, max_message).map_err(|e| (Side::Shadow, e))?;
    Ok(compare(&stable, &shadow, tolerance, max_diffs))
}
