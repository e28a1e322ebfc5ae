//! The one input both inference-protocol endpoints (gRPC and REST) take: FP32 `[N, features]`.

/// Why a request without exactly one input is refused.
pub(crate) fn not_one(inputs: usize, features: usize) -> String {
    format!("expected one input, FP32 [N, {features}]; got {inputs}")
}

/// Checks the input's datatype and shape; returns how many values it must hold.
pub(crate) fn fp32_count(
    name: &str,
    datatype: &str,
    shape: &[i64],
    features: usize,
) -> Result<usize, String> {
    if datatype != "FP32" {
        return Err(format!("input {name:?} is {datatype}, expected FP32"));
    }
    let &[n, f] = shape else {
        return Err(format!("input shape {shape:?}, expected [N, {features}]"));
    };
    if usize::try_from(f).ok() != Some(features) {
        return Err(format!(
            "instances have {f} features, the model takes {features}"
        ));
    }
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(features))
        .ok_or_else(|| format!("input shape {shape:?}, expected [N, {features}]"))
}
