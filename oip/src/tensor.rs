//! One output tensor's elements, read alike from the typed contents or from the raw buffer,
//! so that an answer in one form compares with an answer in the other.
use half::{bf16, f16};

use crate::proto::{InferOutputTensor, InferTensorContents, ModelInferResponse};

/// The protocol's tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datatype {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    Bf16,
    F32,
    F64,
    Bytes,
}

impl Datatype {
    pub(crate) fn parse(name: &str) -> Option<Datatype> {
        Some(match name {
            "BOOL" => Datatype::Bool,
            "UINT8" => Datatype::U8,
            "UINT16" => Datatype::U16,
            "UINT32" => Datatype::U32,
            "UINT64" => Datatype::U64,
            "INT8" => Datatype::I8,
            "INT16" => Datatype::I16,
            "INT32" => Datatype::I32,
            "INT64" => Datatype::I64,
            "FP16" => Datatype::F16,
            "BF16" => Datatype::Bf16,
            "FP32" => Datatype::F32,
            "FP64" => Datatype::F64,
            "BYTES" => Datatype::Bytes,
            _ => return None,
        })
    }

    /// Bytes per element in raw form; `None` for BYTES, whose elements are length-prefixed.
    fn width(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::U8 | Datatype::I8 => 1,
            Datatype::U16 | Datatype::I16 | Datatype::F16 | Datatype::Bf16 => 2,
            Datatype::U32 | Datatype::I32 | Datatype::F32 => 4,
            Datatype::U64 | Datatype::I64 | Datatype::F64 => 8,
            Datatype::Bytes => return None,
        })
    }
}

/// One element. Integers keep their exact value (an `f64` cannot hold every 64-bit one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Float(f64),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Bytes(&'a [u8]),
}

/// Where the elements are.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Bool(&'a [bool]),
    Int(&'a [i32]),
    Int64(&'a [i64]),
    Uint(&'a [u32]),
    Uint64(&'a [u64]),
    Fp32(&'a [f32]),
    Fp64(&'a [f64]),
    Bytes(&'a [Vec<u8>]),
    /// Fixed-width little-endian elements, the buffer's length already checked.
    Raw(&'a [u8]),
    /// 4-byte little-endian length, then the element; already checked to hold `len` of them.
    RawBytes(&'a [u8]),
}

/// An output whose element count matches its shape, ready to be read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tensor<'a> {
    pub(crate) datatype: Datatype,
    pub(crate) len: usize,
    source: Source<'a>,
}

/// The number of elements a shape holds; `None` for a negative dimension or an overflow.
fn elements_of(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// Checks that a length-prefixed buffer holds exactly `len` elements.
fn raw_bytes_hold(mut buf: &[u8], len: usize) -> bool {
    for _ in 0..len {
        let Some((prefix, rest)) = buf.split_first_chunk::<4>() else {
            return false;
        };
        let n = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
        let Some((_, rest)) = rest.split_at_checked(n) else {
            return false;
        };
        buf = rest;
    }
    buf.is_empty()
}

impl<'a> Tensor<'a> {
    /// Output `index` of a response, or `None` when its datatype is not the protocol's or
    /// its elements do not match its shape (count, raw buffer length, missing buffer).
    pub(crate) fn of(response: &'a ModelInferResponse, index: usize) -> Option<Tensor<'a>> {
        let output: &InferOutputTensor = response.outputs.get(index)?;
        let datatype = Datatype::parse(&output.datatype)?;
        let len = elements_of(&output.shape)?;
        // The protocol: raw buffers, when used, are used for every output, in order.
        let source = if response.raw_output_contents.is_empty() {
            typed(datatype, output.contents.as_ref())
        } else {
            let raw = response.raw_output_contents.get(index)?;
            match datatype.width() {
                Some(width) if len.checked_mul(width)? == raw.len() => Source::Raw(raw),
                Some(_) => return None,
                None if raw_bytes_hold(raw, len) => Source::RawBytes(raw),
                None => return None,
            }
        };
        let tensor = Tensor {
            datatype,
            len,
            source,
        };
        (tensor.source_len() == len).then_some(tensor)
    }

    fn source_len(&self) -> usize {
        match self.source {
            Source::Bool(v) => v.len(),
            Source::Int(v) => v.len(),
            Source::Int64(v) => v.len(),
            Source::Uint(v) => v.len(),
            Source::Uint64(v) => v.len(),
            Source::Fp32(v) => v.len(),
            Source::Fp64(v) => v.len(),
            Source::Bytes(v) => v.len(),
            // Checked against the shape when the view was made.
            Source::Raw(_) | Source::RawBytes(_) => self.len,
        }
    }

    pub(crate) fn is_float(&self) -> bool {
        matches!(
            self.datatype,
            Datatype::F16 | Datatype::Bf16 | Datatype::F32 | Datatype::F64
        )
    }

    pub(crate) fn elements(&self) -> Elements<'a> {
        Elements {
            tensor: *self,
            index: 0,
            offset: 0,
        }
    }
}

/// The typed field a datatype's elements live in. FP16 and BF16 have none: typed, they hold
/// no element.
fn typed(datatype: Datatype, contents: Option<&InferTensorContents>) -> Source<'_> {
    let Some(c) = contents else {
        // No contents: zero elements, well formed only for an empty shape product.
        return Source::Bytes(&[]);
    };
    match datatype {
        Datatype::Bool => Source::Bool(&c.bool_contents),
        Datatype::I8 | Datatype::I16 | Datatype::I32 => Source::Int(&c.int_contents),
        Datatype::I64 => Source::Int64(&c.int64_contents),
        Datatype::U8 | Datatype::U16 | Datatype::U32 => Source::Uint(&c.uint_contents),
        Datatype::U64 => Source::Uint64(&c.uint64_contents),
        Datatype::F32 => Source::Fp32(&c.fp32_contents),
        Datatype::F64 => Source::Fp64(&c.fp64_contents),
        Datatype::Bytes => Source::Bytes(&c.bytes_contents),
        Datatype::F16 | Datatype::Bf16 => Source::Bytes(&[]),
    }
}

/// The elements of a tensor, in order.
pub(crate) struct Elements<'a> {
    tensor: Tensor<'a>,
    index: usize,
    /// Position in a raw buffer.
    offset: usize,
}

impl<'a> Elements<'a> {
    fn take<const N: usize>(&mut self, raw: &'a [u8]) -> Option<[u8; N]> {
        let bytes = raw.get(self.offset..self.offset.checked_add(N)?)?;
        self.offset += N;
        bytes.try_into().ok()
    }

    fn raw(&mut self, raw: &'a [u8]) -> Option<Scalar<'a>> {
        Some(match self.tensor.datatype {
            Datatype::Bool => Scalar::Bool(self.take::<1>(raw)?[0] != 0),
            Datatype::U8 => Scalar::Uint(self.take::<1>(raw)?[0].into()),
            Datatype::U16 => Scalar::Uint(u16::from_le_bytes(self.take(raw)?).into()),
            Datatype::U32 => Scalar::Uint(u32::from_le_bytes(self.take(raw)?).into()),
            Datatype::U64 => Scalar::Uint(u64::from_le_bytes(self.take(raw)?)),
            Datatype::I8 => Scalar::Int(i8::from_le_bytes(self.take(raw)?).into()),
            Datatype::I16 => Scalar::Int(i16::from_le_bytes(self.take(raw)?).into()),
            Datatype::I32 => Scalar::Int(i32::from_le_bytes(self.take(raw)?).into()),
            Datatype::I64 => Scalar::Int(i64::from_le_bytes(self.take(raw)?)),
            Datatype::F16 => Scalar::Float(f16::from_le_bytes(self.take(raw)?).to_f64()),
            Datatype::Bf16 => Scalar::Float(bf16::from_le_bytes(self.take(raw)?).to_f64()),
            Datatype::F32 => Scalar::Float(f32::from_le_bytes(self.take(raw)?).into()),
            Datatype::F64 => Scalar::Float(f64::from_le_bytes(self.take(raw)?)),
            Datatype::Bytes => {
                let n = usize::try_from(u32::from_le_bytes(self.take(raw)?)).ok()?;
                let element = raw.get(self.offset..self.offset.checked_add(n)?)?;
                self.offset += n;
                Scalar::Bytes(element)
            }
        })
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Scalar<'a>;

    fn next(&mut self) -> Option<Scalar<'a>> {
        if self.index >= self.tensor.len {
            return None;
        }
        let i = self.index;
        self.index += 1;
        match self.tensor.source {
            Source::Bool(v) => v.get(i).map(|&b| Scalar::Bool(b)),
            Source::Int(v) => v.get(i).map(|&x| Scalar::Int(x.into())),
            Source::Int64(v) => v.get(i).map(|&x| Scalar::Int(x)),
            Source::Uint(v) => v.get(i).map(|&x| Scalar::Uint(x.into())),
            Source::Uint64(v) => v.get(i).map(|&x| Scalar::Uint(x)),
            Source::Fp32(v) => v.get(i).map(|&x| Scalar::Float(x.into())),
            Source::Fp64(v) => v.get(i).map(|&x| Scalar::Float(x)),
            Source::Bytes(v) => v.get(i).map(|x| Scalar::Bytes(x)),
            Source::Raw(raw) | Source::RawBytes(raw) => self.raw(raw),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.tensor.len.saturating_sub(self.index);
        (0, Some(left))
    }
}

/// Picks `wanted` of `total` positions evenly (every `total / wanted`-th), in one pass, so a
/// huge tensor costs a bounded number of observations.
#[derive(Debug)]
pub(crate) struct EvenSample {
    total: u128,
    wanted: u128,
    /// Samples taken so far; the next is at position `taken * total / wanted`.
    taken: u128,
}

impl EvenSample {
    pub(crate) fn new(total: usize, wanted: usize) -> EvenSample {
        EvenSample {
            total: total as u128,
            wanted: wanted.min(total) as u128,
            taken: 0,
        }
    }

    /// Whether position `k` (counted from 0, each asked once and in order) is sampled.
    pub(crate) fn take(&mut self, k: usize) -> bool {
        if self.taken >= self.wanted || self.taken * self.total / self.wanted != k as u128 {
            return false;
        }
        self.taken += 1;
        true
    }
}
