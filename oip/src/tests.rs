//! Comparison and value tests over whole responses, typed and raw.
use crate::proto::{InferOutputTensor, InferTensorContents, ModelInferResponse};
use crate::{
    Comparison, DecodeError, Side, Value, compare, compare_grpc_bodies, encode_frame,
    for_each_output_value,
};

fn output(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        contents: Some(contents),
        ..Default::default()
    }
}

fn fp32(name: &str, values: &[f32]) -> InferOutputTensor {
    output(
        name,
        "FP32",
        &[values.len() as i64],
        InferTensorContents {
            fp32_contents: values.to_vec(),
            ..Default::default()
        },
    )
}

fn labels(name: &str, values: &[&str]) -> InferOutputTensor {
    output(
        name,
        "BYTES",
        &[values.len() as i64],
        InferTensorContents {
            bytes_contents: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            ..Default::default()
        },
    )
}

fn response(outputs: Vec<InferOutputTensor>) -> ModelInferResponse {
    ModelInferResponse {
        model_name: "churn".into(),
        outputs,
        ..Default::default()
    }
}

/// The same response with every output's elements moved to `raw_output_contents`.
fn to_raw(typed: &ModelInferResponse) -> ModelInferResponse {
    let mut raw = typed.clone();
    raw.raw_output_contents = raw
        .outputs
        .iter_mut()
        .map(|o| {
            let c = o.contents.take().unwrap_or_default();
            let mut buf = Vec::new();
            match o.datatype.as_str() {
                "FP32" => c
                    .fp32_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "FP64" => c
                    .fp64_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "INT8" => c
                    .int_contents
                    .iter()
                    .for_each(|x| buf.extend((*x as i8).to_le_bytes())),
                "INT16" => c
                    .int_contents
                    .iter()
                    .for_each(|x| buf.extend((*x as i16).to_le_bytes())),
                "INT32" => c
                    .int_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "INT64" => c
                    .int64_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "UINT8" => c
                    .uint_contents
                    .iter()
                    .for_each(|x| buf.extend((*x as u8).to_le_bytes())),
                "UINT16" => c
                    .uint_contents
                    .iter()
                    .for_each(|x| buf.extend((*x as u16).to_le_bytes())),
                "UINT32" => c
                    .uint_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "UINT64" => c
                    .uint64_contents
                    .iter()
                    .for_each(|x| buf.extend(x.to_le_bytes())),
                "BOOL" => c.bool_contents.iter().for_each(|x| buf.push(u8::from(*x))),
                "BYTES" => c.bytes_contents.iter().for_each(|x| {
                    buf.extend((x.len() as u32).to_le_bytes());
                    buf.extend(x);
                }),
                other => panic!("no raw form for {other} in these tests"),
            }
            buf
        })
        .collect();
    raw
}

fn agree() -> Comparison {
    Comparison {
        agree: true,
        reason: None,
        abs_diffs: Vec::new(),
    }
}

fn reason(a: &ModelInferResponse, b: &ModelInferResponse) -> Option<&'static str> {
    compare(a, b, 1e-6, 0).reason
}

fn every_datatype() -> ModelInferResponse {
    let ints = InferTensorContents {
        int_contents: vec![-3, 0, 7],
        ..Default::default()
    };
    let uints = InferTensorContents {
        uint_contents: vec![0, 1, 200],
        ..Default::default()
    };
    response(vec![
        fp32("score", &[0.25, -1.5, f32::NAN]),
        output(
            "fp64",
            "FP64",
            &[3],
            InferTensorContents {
                fp64_contents: vec![1e300, -0.0, f64::INFINITY],
                ..Default::default()
            },
        ),
        output("int8", "INT8", &[3], ints.clone()),
        output("int16", "INT16", &[3], ints.clone()),
        output("int32", "INT32", &[1, 3], ints),
        output(
            "int64",
            "INT64",
            &[3],
            InferTensorContents {
                int64_contents: vec![i64::MIN, 0, i64::MAX],
                ..Default::default()
            },
        ),
        output("uint8", "UINT8", &[3], uints.clone()),
        output("uint16", "UINT16", &[3], uints.clone()),
        output("uint32", "UINT32", &[3, 1], uints),
        output(
            "uint64",
            "UINT64",
            &[3],
            InferTensorContents {
                uint64_contents: vec![0, u64::MAX - 1, u64::MAX],
                ..Default::default()
            },
        ),
        output(
            "bool",
            "BOOL",
            &[3],
            InferTensorContents {
                bool_contents: vec![true, false, true],
                ..Default::default()
            },
        ),
        labels("label", &["stay", "", "churn"]),
        // No contents and no elements.
        InferOutputTensor {
            name: "empty".into(),
            datatype: "FP32".into(),
            shape: vec![0, 4],
            ..Default::default()
        },
    ])
}

#[test]
fn identical_answers_agree_typed_raw_and_mixed() {
    let typed = every_datatype();
    let raw = to_raw(&typed);
    for (a, b) in [
        (&typed, &typed),
        (&raw, &raw),
        (&typed, &raw),
        (&raw, &typed),
    ] {
        let c = compare(a, b, 0.0, 0);
        assert_eq!(c, agree());
    }
}

#[test]
fn output_order_does_not_matter() {
    let a = response(vec![fp32("score", &[0.5]), labels("label", &["yes"])]);
    let b = response(vec![labels("label", &["yes"]), fp32("score", &[0.5])]);
    assert_eq!(compare(&a, &b, 0.0, 10).reason, None);
    // Raw buffers follow their own response's output order.
    assert_eq!(compare(&to_raw(&a), &b, 0.0, 10).reason, None);
    assert_eq!(compare(&a, &to_raw(&b), 0.0, 10).reason, None);
}

#[test]
fn every_kind_of_disagreement() {
    let base = response(vec![
        fp32("score", &[0.5, 0.25]),
        labels("label", &["a", "b"]),
    ]);
    let mut missing = base.clone();
    missing.outputs.remove(1);
    assert_eq!(reason(&base, &missing), Some("output_missing"));
    assert_eq!(reason(&missing, &base), Some("extra_output"));

    let mut renamed = base.clone();
    renamed.outputs[1].name = "class".into();
    assert_eq!(reason(&base, &renamed), Some("output_missing"));

    let mut datatype = base.clone();
    datatype.outputs[0].datatype = "FP64".into();
    assert_eq!(reason(&base, &datatype), Some("datatype"));

    let mut shape = base.clone();
    shape.outputs[0].shape = vec![2, 1];
    assert_eq!(reason(&base, &shape), Some("shape"));

    let mut value = base.clone();
    value.outputs[1] = labels("label", &["a", "c"]);
    assert_eq!(reason(&base, &value), Some("contents"));
    assert_eq!(reason(&to_raw(&base), &value), Some("contents"));

    // The first disagreement follows the stable answer's outputs.
    let mut both = value.clone();
    both.outputs[0].shape = vec![1, 2];
    assert_eq!(reason(&base, &both), Some("shape"));
    both.outputs.swap(0, 1);
    assert_eq!(reason(&base, &both), Some("shape"));
    let mut both = shape.clone();
    both.outputs[1] = labels("label", &["a", "c"]);
    let mut swapped = base.clone();
    swapped.outputs.swap(0, 1);
    assert_eq!(reason(&swapped, &both), Some("contents"));
}

#[test]
fn duplicate_names_pair_in_order() {
    let a = response(vec![fp32("x", &[1.0]), fp32("x", &[2.0])]);
    let b = a.clone();
    assert_eq!(reason(&a, &b), None);
    let mut swapped = a.clone();
    swapped.outputs.swap(0, 1);
    assert_eq!(reason(&a, &swapped), Some("contents"));
    let mut one = a.clone();
    one.outputs.pop();
    assert_eq!(reason(&a, &one), Some("output_missing"));
    assert_eq!(reason(&one, &a), Some("extra_output"));
}

#[test]
fn element_counts_must_match_the_shape() {
    let good = response(vec![fp32("score", &[0.5, 0.25])]);
    let mut short = good.clone();
    short.outputs[0].shape = vec![3];
    let mut three = good.clone();
    three.outputs[0] = fp32("score", &[0.5, 0.25, 0.0]);
    // Same shape [3] on both sides, but one holds only two elements.
    assert_eq!(reason(&three, &short), Some("contents"));
    assert_eq!(reason(&short, &three), Some("contents"));
    // Two well-shaped answers with the count wrong on both still disagree: nothing to compare.
    assert_eq!(reason(&short, &short), Some("contents"));

    let mut raw = to_raw(&good);
    raw.raw_output_contents[0].pop();
    assert_eq!(reason(&good, &raw), Some("contents"));
    let mut missing_buffer = to_raw(&response(vec![fp32("a", &[1.0]), fp32("b", &[2.0])]));
    missing_buffer.raw_output_contents.pop();
    let typed = response(vec![fp32("a", &[1.0]), fp32("b", &[2.0])]);
    assert_eq!(reason(&typed, &missing_buffer), Some("contents"));

    for shape in [vec![-1], vec![i64::MAX, i64::MAX], vec![1 << 62, 8]] {
        let mut bad = good.clone();
        bad.outputs[0].shape = shape;
        assert_eq!(reason(&bad, &bad), Some("contents"));
    }

    let strings = response(vec![labels("label", &["ab", "c"])]);
    let mut raw = to_raw(&strings);
    // A length prefix that runs past the buffer.
    raw.raw_output_contents[0][0] = 9;
    assert_eq!(reason(&strings, &raw), Some("contents"));
    let mut raw = to_raw(&strings);
    raw.raw_output_contents[0].push(0);
    assert_eq!(reason(&strings, &raw), Some("contents"));
}

#[test]
fn unknown_and_untyped_datatypes() {
    let mut odd = response(vec![fp32("x", &[1.0])]);
    odd.outputs[0].datatype = "FP8".into();
    assert_eq!(reason(&odd, &odd), Some("contents"));
    // FP16 has no typed field: only raw compares.
    let mut half = response(vec![fp32("x", &[1.0])]);
    half.outputs[0].datatype = "FP16".into();
    assert_eq!(reason(&half, &half), Some("contents"));
    half.outputs[0].shape = vec![0];
    assert_eq!(
        reason(&half, &half),
        None,
        "but an empty one is well formed"
    );
}

#[test]
fn fp16_and_bf16_in_raw_form() {
    let raw = |datatype: &str, bits: &[u16]| {
        let mut r = response(vec![InferOutputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: vec![bits.len() as i64],
            ..Default::default()
        }]);
        r.raw_output_contents = vec![bits.iter().flat_map(|b| b.to_le_bytes()).collect()];
        r
    };
    // FP16: 1.0 is 0x3c00, 1.0009765625 (the next) 0x3c01, 2.0 0x4000.
    let one = raw("FP16", &[0x3c00, 0x4000]);
    let next = raw("FP16", &[0x3c01, 0x4000]);
    let c = compare(&one, &next, 0.0, 10);
    assert_eq!(c.reason, Some("contents"));
    assert_eq!(c.abs_diffs, vec![0.0009765625, 0.0]);
    assert!(compare(&one, &next, 0.001, 10).agree);
    // BF16: 1.0 is 0x3f80, 1.0078125 0x3f81.
    let c = compare(&raw("BF16", &[0x3f80]), &raw("BF16", &[0x3f81]), 0.0, 10);
    assert_eq!(c.abs_diffs, vec![0.0078125]);
    let mut values = Vec::new();
    for_each_output_value(&one, 10, |_, v| values.push(v));
    assert_eq!(values, vec![Value::Number(1.0), Value::Number(2.0)]);
}

#[test]
fn tolerance_edges() {
    let a = response(vec![output(
        "x",
        "FP64",
        &[1],
        InferTensorContents {
            fp64_contents: vec![1.0],
            ..Default::default()
        },
    )]);
    let mut b = a.clone();
    b.outputs[0].contents.as_mut().unwrap().fp64_contents = vec![1.5];
    let c = compare(&a, &b, 0.5, 10);
    assert!(c.agree, "a difference equal to the tolerance agrees");
    assert_eq!(c.abs_diffs, vec![0.5]);
    assert!(!compare(&a, &b, 0.499_999, 10).agree);
    assert!(!compare(&a, &b, f64::NAN, 10).agree);
    assert!(!compare(&a, &b, -1.0, 10).agree);
    assert!(compare(&a, &a, f64::NAN, 10).agree, "a NaN tolerance is 0");
    assert!(compare(&a, &b, f64::INFINITY, 10).agree);
}

#[test]
fn fp32_is_compared_as_sent() {
    // 0.1f32 is not 0.1f64: the comparison sees the float the model sent.
    let a = response(vec![fp32("x", &[0.1])]);
    let b = response(vec![fp32("x", &[0.1 + f32::EPSILON])]);
    let c = compare(&a, &b, 0.0, 1);
    assert!(!c.agree);
    assert_eq!(
        c.abs_diffs,
        vec![(0.1f32 + f32::EPSILON) as f64 - 0.1f32 as f64]
    );
}

#[test]
fn nan_agrees_only_with_nan() {
    let nan = response(vec![fp32("x", &[f32::NAN, f32::INFINITY])]);
    let c = compare(&nan, &nan, 0.0, 10);
    assert_eq!(
        c,
        Comparison {
            abs_diffs: vec![0.0, 0.0],
            ..agree()
        }
    );
    let number = response(vec![fp32("x", &[1.0, f32::INFINITY])]);
    for (a, b) in [(&nan, &number), (&number, &nan)] {
        let c = compare(a, b, f64::INFINITY, 10);
        assert_eq!(
            c.reason,
            Some("contents"),
            "even with an infinite tolerance"
        );
        assert_eq!(c.abs_diffs, vec![f64::INFINITY, 0.0]);
    }
    let minus = response(vec![fp32("x", &[f32::NAN, f32::NEG_INFINITY])]);
    assert!(!compare(&nan, &minus, 1e9, 10).agree);
}

#[test]
fn integers_booleans_and_bytes_compare_exactly() {
    let ints = |v: Vec<i64>| {
        response(vec![output(
            "n",
            "INT64",
            &[v.len() as i64],
            InferTensorContents {
                int64_contents: v,
                ..Default::default()
            },
        )])
    };
    // Two integers an f64 cannot tell apart.
    let a = ints(vec![i64::MAX]);
    let b = ints(vec![i64::MAX - 1]);
    let c = compare(&a, &b, 10.0, 10);
    assert_eq!(c.reason, Some("contents"), "integers ignore the tolerance");
    assert!(
        c.abs_diffs.is_empty(),
        "only floating-point pairs are recorded"
    );
    let bools = |v: Vec<bool>| {
        response(vec![output(
            "b",
            "BOOL",
            &[v.len() as i64],
            InferTensorContents {
                bool_contents: v,
                ..Default::default()
            },
        )])
    };
    assert_eq!(
        reason(&bools(vec![true]), &bools(vec![false])),
        Some("contents")
    );
    assert_eq!(
        reason(&to_raw(&bools(vec![true])), &bools(vec![true])),
        None
    );
    assert_eq!(
        reason(&labels_response(&["yes"]), &labels_response(&["yes "])),
        Some("contents")
    );
}

fn labels_response(values: &[&str]) -> ModelInferResponse {
    response(vec![labels("label", values)])
}

#[test]
fn the_diffs_are_bounded_and_spread_evenly() {
    let n = 1 << 20;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    // Each element differs from the stable one by its position's share of 1.
    let b: Vec<f32> = (0..n).map(|i| i as f32 + (i as f32 / n as f32)).collect();
    let stable = response(vec![fp32("x", &a)]);
    let shadow = to_raw(&response(vec![fp32("x", &b)]));
    let c = compare(&stable, &shadow, 2.0, 64);
    assert!(c.agree);
    assert_eq!(c.abs_diffs.len(), 64);
    // Spread over the whole tensor, not its first 64 elements.
    assert!(c.abs_diffs[0] < 0.01);
    assert!(c.abs_diffs[63] > 0.9, "{}", c.abs_diffs[63]);
    // Every pair is still checked: the last one alone breaks the tolerance.
    let mut last = b.clone();
    last[n - 1] += 10.0;
    let c = compare(&stable, &response(vec![fp32("x", &last)]), 2.0, 64);
    assert_eq!(c.reason, Some("contents"));
    assert_eq!(c.abs_diffs.len(), 64);
    assert!(compare(&stable, &stable, 0.0, 0).abs_diffs.is_empty());
    // Fewer pairs than the bound: all of them, across outputs.
    let two = response(vec![
        fp32("x", &[1.0]),
        labels("l", &["a"]),
        fp32("y", &[2.0]),
    ]);
    assert_eq!(compare(&two, &two, 0.0, 100).abs_diffs, vec![0.0, 0.0]);
}

#[test]
fn values_of_every_output_within_a_bound() {
    let r = response(vec![
        fp32("score", &[0.5, 0.25]),
        labels("label", &["yes", "no"]),
        output(
            "n",
            "INT32",
            &[1],
            InferTensorContents {
                int_contents: vec![-4],
                ..Default::default()
            },
        ),
        output(
            "b",
            "BOOL",
            &[1],
            InferTensorContents {
                bool_contents: vec![true],
                ..Default::default()
            },
        ),
    ]);
    for r in [r.clone(), to_raw(&r)] {
        let mut seen = Vec::new();
        for_each_output_value(&r, 100, |name, v| seen.push((name.to_owned(), v)));
        let expected = vec![
            ("score".to_owned(), Value::Number(0.5)),
            ("score".to_owned(), Value::Number(0.25)),
            ("label".to_owned(), Value::Bytes(b"yes")),
            ("label".to_owned(), Value::Bytes(b"no")),
            ("n".to_owned(), Value::Number(-4.0)),
            ("b".to_owned(), Value::Bool(true)),
        ];
        assert_eq!(seen, expected);
    }
    // A bound takes values from every output, not only the first.
    let big = response(vec![
        fp32("score", &[0.5; 1000]),
        labels("label", &["x"; 1000]),
    ]);
    let mut names = Vec::new();
    for_each_output_value(&big, 10, |name, _| names.push(name.to_owned()));
    assert_eq!(names.len(), 10);
    assert_eq!(names.iter().filter(|n| *n == "label").count(), 5);
    let mut count = 0;
    for_each_output_value(&big, 0, |_, _| count += 1);
    assert_eq!(count, 0);
    // An unreadable output is skipped, the others still counted.
    let mut bad = big.clone();
    bad.outputs[0].shape = vec![999];
    let mut names = Vec::new();
    for_each_output_value(&bad, 2000, |name, _| names.push(name.to_owned()));
    assert_eq!(names.len(), 1000);
    assert!(names.iter().all(|n| n == "label"));
}

#[test]
fn grpc_bodies() {
    let a = response(vec![fp32("score", &[0.5])]);
    let b = response(vec![fp32("score", &[0.75])]);
    let (fa, fb) = (encode_frame(&a), encode_frame(&b));
    let c = compare_grpc_bodies(&fa, &fb, 0.1, 10, 1 << 20).unwrap();
    assert_eq!(c.reason, Some("contents"));
    assert_eq!(c.abs_diffs, vec![0.25]);
    assert!(
        compare_grpc_bodies(&fa, &fa, 0.0, 10, 1 << 20)
            .unwrap()
            .agree
    );
    let Err((side, e)) = compare_grpc_bodies(&fa, &fb[..3], 0.1, 10, 1 << 20) else {
        panic!("a truncated shadow answer");
    };
    assert_eq!((side, e.label()), (Side::Shadow, "truncated"));
    let Err((side, e)) = compare_grpc_bodies(&[], &[], 0.1, 10, 1 << 20) else {
        panic!("two empty answers");
    };
    assert_eq!(side, Side::Stable, "the stable side is decoded first");
    assert!(matches!(e, DecodeError::Empty));
    let mut compressed = fb.to_vec();
    compressed[0] = 1;
    assert!(matches!(
        compare_grpc_bodies(&fa, &compressed, 0.1, 10, 1 << 20),
        Err((Side::Shadow, DecodeError::Compressed))
    ));
    assert!(matches!(
        compare_grpc_bodies(&fa, &fb, 0.1, 10, 4),
        Err((Side::Stable, DecodeError::TooLarge { .. }))
    ));
}

/// A small deterministic generator (xorshift), to stay free of dependencies.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let valid = encode_frame(&to_raw(&every_datatype())).to_vec();
    let typed = encode_frame(&every_datatype()).to_vec();
    for round in 0..20_000 {
        let body = match round % 3 {
            // Random bytes behind a plausible header.
            0 => {
                let len = (noise.next() % 200) as usize;
                let mut body = vec![0, 0, 0, 0, len as u8];
                body.extend((0..len).map(|_| noise.next() as u8));
                body
            }
            // A valid answer with a few bytes flipped: still mostly decodable.
            1 => {
                let mut body = if round % 2 == 0 {
                    valid.clone()
                } else {
                    typed.clone()
                };
                for _ in 0..1 + noise.next() % 4 {
                    let i = FRAME_HEADER + (noise.next() as usize) % (body.len() - FRAME_HEADER);
                    body[i] = noise.next() as u8;
                }
                body
            }
            // Anything at all.
            _ => (0..noise.next() % 64).map(|_| noise.next() as u8).collect(),
        };
        for (a, b) in [(&body, &valid), (&valid, &body), (&body, &body)] {
            if let Ok(c) = compare_grpc_bodies(a, b, 1e-3, 16, 1 << 16) {
                assert!(c.abs_diffs.len() <= 16);
                assert_eq!(c.agree, c.reason.is_none());
            }
        }
        if let Ok(r) = crate::decode_unary::<ModelInferResponse>(&body, 1 << 16) {
            let mut count = 0;
            for_each_output_value(&r, 8, |_, _| count += 1);
            assert!(count <= 8);
        }
    }
}

const FRAME_HEADER: usize = crate::FRAME_HEADER_LEN;

#[test]
fn a_response_survives_the_wire() {
    let r = every_datatype();
    let back: ModelInferResponse = crate::decode_unary(&encode_frame(&r), 1 << 20).unwrap();
    // NaN != NaN, so compare what matters rather than with ==.
    assert_eq!(compare(&r, &back, 0.0, 0), agree());
    assert_eq!(back.outputs.len(), r.outputs.len());
    let raw = to_raw(&r);
    let back: ModelInferResponse = crate::decode_unary(&encode_frame(&raw), 1 << 20).unwrap();
    assert_eq!(back.raw_output_contents, raw.raw_output_contents);
}
