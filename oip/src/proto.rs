//! The messages of the Open Inference Protocol's gRPC service (`inference` package,
//! `grpc_predict_v2.proto`), written by hand with prost's derive: same field numbers and wire
//! types as the published proto, so no protoc and no build script. Only the messages the
//! router and the test model server exchange are here; the metadata calls are not.
use std::collections::HashMap;

/// The service's path prefix: a method is `/inference.GRPCInferenceService/<Method>`.
pub const SERVICE: &str = "inference.GRPCInferenceService";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveResponse {
    #[prost(bool, tag = "1")]
    pub live: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyResponse {
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyResponse {
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// A parameter of a request, a response or a tensor: one of five scalar kinds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    #[prost(oneof = "infer_parameter::ParameterChoice", tags = "1, 2, 3, 4, 5")]
    pub parameter_choice: Option<infer_parameter::ParameterChoice>,
}

pub mod infer_parameter {
    /// The `parameter_choice` oneof.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ParameterChoice {
        #[prost(bool, tag = "1")]
        BoolParam(bool),
        #[prost(int64, tag = "2")]
        Int64Param(i64),
        #[prost(string, tag = "3")]
        StringParam(String),
        #[prost(double, tag = "4")]
        DoubleParam(f64),
        #[prost(uint64, tag = "5")]
        Uint64Param(u64),
    }
}

/// A tensor's elements in typed form; which field holds them follows the datatype
/// (`FP32` → `fp32_contents`, `INT8`/`INT16`/`INT32` → `int_contents`, and so on).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<model_infer_request::InferInputTensor>,
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<model_infer_request::InferRequestedOutputTensor>,
    /// One little-endian buffer per input, in order, instead of typed contents.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

pub mod model_infer_request {
    use std::collections::HashMap;

    use super::{InferParameter, InferTensorContents};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferInputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferRequestedOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(map = "string, message", tag = "2")]
        pub parameters: HashMap<String, InferParameter>,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<model_infer_response::InferOutputTensor>,
    /// One little-endian buffer per output, in order, instead of typed contents.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

pub mod model_infer_response {
    use std::collections::HashMap;

    use super::{InferParameter, InferTensorContents};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }
}

pub use model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
pub use model_infer_response::InferOutputTensor;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use infer_parameter::ParameterChoice;

    /// Field numbers and wire types, against bytes worked out by hand from the proto.
    #[test]
    fn wire_format() {
        let response = ModelInferResponse {
            model_name: "m".into(),
            parameters: HashMap::from([(
                "p".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::DoubleParam(0.5)),
                },
            )]),
            outputs: vec![InferOutputTensor {
                name: "s".into(),
                datatype: "FP32".into(),
                shape: vec![2],
                contents: Some(InferTensorContents {
                    fp32_contents: vec![1.0, 2.0],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            raw_output_contents: vec![vec![1, 2]],
            ..Default::default()
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 1, b'm',
            // parameters: a map entry, key 1, value 2 (double_param, field 4, fixed 64-bit).
            0x22, 14, 0x0a, 1, b'p', 0x12, 9, 0x21, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f,
            0x2a, 24,
              0x0a, 1, b's',
              0x12, 4, b'F', b'P', b'3', b'2',
              // shape, packed
              0x1a, 1, 2,
              // contents: fp32_contents (field 6), packed
              0x2a, 10, 0x32, 8, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40,
            0x32, 2, 1, 2,
        ];
        assert_eq!(response.encode_to_vec(), expected);
        assert_eq!(ModelInferResponse::decode(expected).unwrap(), response);

        let request = ModelInferRequest {
            id: "i".into(),
            outputs: vec![InferRequestedOutputTensor {
                name: "s".into(),
                ..Default::default()
            }],
            raw_input_contents: vec![vec![9]],
            ..Default::default()
        };
        let expected: &[u8] = &[0x1a, 1, b'i', 0x32, 3, 0x0a, 1, b's', 0x3a, 1, 9];
        assert_eq!(request.encode_to_vec(), expected);

        let contents = InferTensorContents {
            bool_contents: vec![true],
            int_contents: vec![-1],
            uint64_contents: vec![3],
            bytes_contents: vec![b"x".to_vec()],
            ..Default::default()
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 1, 1,
            // int32 -1: ten bytes of varint
            0x12, 10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            0x2a, 1, 3,
            0x42, 1, b'x',
        ];
        assert_eq!(contents.encode_to_vec(), expected);
        let ready = ModelReadyResponse { ready: true };
        assert_eq!(ready.encode_to_vec(), [0x08, 1]);
    }
}
