//! The values of an answer's outputs, for distributions of what a model predicts.
use crate::proto::ModelInferResponse;
use crate::tensor::{EvenSample, Scalar, Tensor};

/// One output element. Integers are given as numbers too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    Bool(bool),
    Bytes(&'a [u8]),
}

/// Calls `f` with the output's name and value for at most `max` elements in all, picked
/// evenly over every element of every output, so that a large answer costs a bounded number
/// of observations and each output keeps its share. Outputs that cannot be read (unknown
/// datatype, elements that do not match the shape) are skipped.
pub fn for_each_output_value<'a>(
    response: &'a ModelInferResponse,
    max: usize,
    mut f: impl FnMut(&'a str, Value<'a>),
) {
    let tensors: Vec<(&str, Tensor<'a>)> = response
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, output)| Some((output.name.as_str(), Tensor::of(response, i)?)))
        .collect();
    let total = tensors.iter().map(|(_, t)| t.len).sum();
    let mut sample = EvenSample::new(total, max);
    let mut k = 0;
    for (name, tensor) in tensors {
        for element in tensor.elements() {
            if sample.take(k) {
                f(
                    name,
                    match element {
                        Scalar::Float(x) => Value::Number(x),
                        Scalar::Int(x) => Value::Number(x as f64),
                        Scalar::Uint(x) => Value::Number(x as f64),
                        Scalar::Bool(b) => Value::Bool(b),
                        Scalar::Bytes(b) => Value::Bytes(b),
                    },
                );
            }
            k += 1;
        }
    }
}
