//! The Open Inference Protocol (KServe's v2 inference protocol) over gRPC, as modelship's
//! mirroring router needs it: the `inference.GRPCInferenceService` messages (hand-written
//! prost derives, no protoc), gRPC's unary framing, and the comparison of a stable and a
//! shadow `ModelInferResponse`.
//!
//! Bounds, since every input comes from the network:
//! - [`decode_unary`] takes exactly one uncompressed frame of at most `max_message` bytes;
//!   anything else is a [`DecodeError`] with a bounded [`label`](DecodeError::label). It and
//!   [`compare_grpc_bodies`] never panic, whatever the bytes.
//! - [`compare`] checks every element pair but records at most `max_diffs` differences,
//!   picked evenly; [`for_each_output_value`] yields at most `max` values. Work is linear in
//!   the size of the decoded messages.
//!
//! Outputs compare by name (order aside) whether their elements are in the typed contents or
//! in `raw_output_contents` (little-endian; BYTES elements with a 4-byte length prefix).
//! Datatypes and shapes must be equal; floats (FP16, BF16, FP32, FP64) agree within an
//! absolute tolerance, NaN only with NaN; integers, booleans and bytes agree when equal. An
//! output of a datatype outside the protocol's, or whose elements do not match its shape,
//! disagrees as `contents`.
mod compare;
mod frame;
pub mod proto;
mod tensor;
mod values;

pub use compare::{Comparison, Side, compare, compare_grpc_bodies};
pub use frame::{DecodeError, FRAME_HEADER_LEN, decode_unary, encode_frame, unary_payload};
/// The prost this crate's messages are built with, for its `Message` trait.
pub use prost;
pub use proto::{
    InferOutputTensor, InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
pub use values::{Value, for_each_output_value};

#[cfg(test)]
mod tests;
