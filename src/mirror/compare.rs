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
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

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

/// Where `values_agree` puts the absolute difference of each pair of numbers it compares.
pub trait DiffSink {
    fn push(&mut self, diff: f64);
}

/// Every difference, in the order compared.
impl DiffSink for Vec<f64> {
    fn push(&mut self, diff: f64) {
        Vec::push(self, diff);
    }
}

/// At most this many differences of one answer are recorded (the histogram's cost must not
/// grow with the answer: a 1 MiB array holds about half a million numbers).
pub const MAX_DIFFS: usize = 64;

/// The differences of one answer, bounded: every pair's while there are at most `MAX_DIFFS`,
/// then every `stride`-th pair's, the stride doubling each time the buffer fills, so that
/// what is kept stays evenly spread over the whole answer. Every pair is still judged against
/// the tolerance; only what is recorded is bounded.
#[derive(Debug, Clone)]
pub struct Diffs {
    kept: [f64; MAX_DIFFS],
    len: usize,
    /// Pairs seen so far.
    pairs: u64,
    stride: u64,
}

impl Default for Diffs {
    fn default() -> Self {
        Diffs {
            kept: [0.0; MAX_DIFFS],
            len: 0,
            pairs: 0,
            stride: 1,
        }
    }
}

impl Diffs {
    /// The differences kept, in the order compared.
    pub fn as_slice(&self) -> &[f64] {
        &self.kept[..self.len]
    }

    /// How many pairs of numbers were compared.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }
}

impl DiffSink for Diffs {
    fn push(&mut self, diff: f64) {
        let index = self.pairs;
        self.pairs += 1;
        if !index.is_multiple_of(self.stride) {
            return;
        }
        if self.len == MAX_DIFFS {
            // Keep the pairs at multiples of twice the stride: every other one kept so far.
            for i in 0..MAX_DIFFS / 2 {
                self.kept[i] = self.kept[2 * i];
            }
            self.len = MAX_DIFFS / 2;
            self.stride *= 2;
            if !index.is_multiple_of(self.stride) {
                return;
            }
        }
        self.kept[self.len] = diff;
        self.len += 1;
    }
}

/// A comparison with what was learnt on the way.
#[derive(Debug, Default)]
pub struct Judgement<'a> {
    pub outcome: Option<Outcome>,
    /// Absolute differences of the pairs of numbers compared, bounded (see `Diffs`).
    pub abs_diffs: Diffs,
    /// Stable's document (what the pointers reach), when it answered 2xx with JSON.
    pub stable: Option<Document<'a>>,
    /// The shadow's document (what the pointers reach), when it answered 2xx with JSON.
    pub shadow: Option<Document<'a>>,
}

/// A JSON value as the comparison sees it: `serde_json::Value`, or a `Document`.
pub trait Json: Sized {
    type Members<'v>: ExactSizeIterator<Item = (&'v str, &'v Self)>
    where
        Self: 'v;

    fn kind(&self) -> Kind<'_, Self>;
    /// The member of an object with this key.
    fn member(&self, key: &str) -> Option<&Self>;
    /// The element of an array at this index.
    fn element(&self, index: usize) -> Option<&Self>;
}

/// What a JSON value is.
pub enum Kind<'v, J: Json + 'v> {
    Null,
    Bool(bool),
    Number(&'v Number),
    String(&'v str),
    Array(&'v [J]),
    /// An object's members, in key order.
    Object(J::Members<'v>),
    /// Part of a document the pointers only pass through (see `Document`): never compared.
    Partial,
}

fn value_member<'v>((key, value): (&'v String, &'v Value)) -> (&'v str, &'v Value) {
    (key, value)
}

fn document_member<'v, 'a>(
    (key, value): &'v (Cow<'a, str>, Document<'a>),
) -> (&'v str, &'v Document<'a>) {
    (key, value)
}

impl Json for Value {
    type Members<'v> = std::iter::Map<
        serde_json::map::Iter<'v>,
        fn((&'v String, &'v Value)) -> (&'v str, &'v Value),
    >;

    fn kind(&self) -> Kind<'_, Self> {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => Kind::Number(n),
            Value::String(s) => Kind::String(s),
            Value::Array(a) => Kind::Array(a),
            Value::Object(map) => Kind::Object(map.iter().map(value_member as _)),
        }
    }

    fn member(&self, key: &str) -> Option<&Self> {
        match self {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    fn element(&self, index: usize) -> Option<&Self> {
        match self {
            Value::Array(list) => list.get(index),
            _ => None,
        }
    }
}

/// A parsed answer that borrows its strings from the body and holds only what the pointers
/// reach: where a pointer ends, the whole value, as `serde_json::Value` would hold it
/// (objects sorted by key, the last of duplicate keys kept); on the way there, only the
/// members and elements the pointers name. The rest of the body is checked as JSON, not kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Document<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Document<'a>>),
    /// Sorted by key, one member per key.
    Object(Vec<(Cow<'a, str>, Document<'a>)>),
    /// An object on the way to a pointer's end: only the members named, sorted, one per key.
    PartialObject(Vec<(Cow<'a, str>, Document<'a>)>),
    /// An array on the way to a pointer's end: only the elements named, by index.
    PartialArray(Vec<(usize, Document<'a>)>),
    /// Something no pointer reaches.
    Skipped,
}

type Members<'v, 'a> = std::iter::Map<
    std::slice::Iter<'v, (Cow<'a, str>, Document<'a>)>,
    fn(&'v (Cow<'a, str>, Document<'a>)) -> (&'v str, &'v Document<'a>),
>;

impl<'a> Json for Document<'a> {
    type Members<'v>
        = Members<'v, 'a>
    where
        Self: 'v;

    fn kind(&self) -> Kind<'_, Self> {
        match self {
            Document::Null => Kind::Null,
            Document::Bool(b) => Kind::Bool(*b),
            Document::Number(n) => Kind::Number(n),
            Document::String(s) => Kind::String(s),
            Document::Array(a) => Kind::Array(a),
            Document::Object(members) => Kind::Object(members.iter().map(document_member as _)),
            Document::PartialObject(_) | Document::PartialArray(_) | Document::Skipped => {
                Kind::Partial
            }
        }
    }

    fn member(&self, key: &str) -> Option<&Self> {
        match self {
            Document::Object(members) | Document::PartialObject(members) => members
                .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                .ok()
                .map(|i| &members[i].1),
            _ => None,
        }
    }

    fn element(&self, index: usize) -> Option<&Self> {
        match self {
            Document::Array(list) => list.get(index),
            Document::PartialArray(list) => list
                .binary_search_by_key(&index, |(i, _)| *i)
                .ok()
                .map(|i| &list[i].1),
            _ => None,
        }
    }
}

impl Document<'_> {
    /// The whole of a `serde_json::Value`.
    fn from_value(value: Value) -> Document<'static> {
        match value {
            Value::Null => Document::Null,
            Value::Bool(b) => Document::Bool(b),
            Value::Number(n) => Document::Number(n),
            Value::String(s) => Document::String(Cow::Owned(s)),
            Value::Array(a) => Document::Array(a.into_iter().map(Document::from_value).collect()),
            // A serde_json map iterates sorted by key, one member per key.
            Value::Object(map) => Document::Object(
                map.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Document::from_value(v)))
                    .collect(),
            ),
        }
    }
}

/// Where a JSON pointer leads in a document.
pub trait Locate {
    fn locate<'a, J: Json>(&self, document: &'a J) -> Option<&'a J>;

    /// Runs `f` with the pointers parsed.
    fn with_parsed<R>(pointers: &[Self], f: impl FnOnce(&[Pointer]) -> R) -> R
    where
        Self: Sized;
}

/// A pointer as a string, parsed on every call.
impl Locate for String {
    fn locate<'a, J: Json>(&self, document: &'a J) -> Option<&'a J> {
        Pointer::parse(self).locate(document)
    }

    fn with_parsed<R>(pointers: &[Self], f: impl FnOnce(&[Pointer]) -> R) -> R {
        let parsed: Vec<Pointer> = pointers.iter().map(|p| Pointer::parse(p)).collect();
        f(&parsed)
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
    fn locate<'a, J: Json>(&self, document: &'a J) -> Option<&'a J> {
        self.tokens
            .as_ref()?
            .iter()
            .try_fold(document, |target, token| match target.kind() {
                Kind::Array(_) => token.index.and_then(|i| target.element(i)),
                Kind::Partial => target
                    .member(&token.key)
                    .or_else(|| token.index.and_then(|i| target.element(i))),
                _ => target.member(&token.key),
            })
    }

    fn with_parsed<R>(pointers: &[Self], f: impl FnOnce(&[Pointer]) -> R) -> R {
        f(pointers)
    }
}

/// Parses a 2xx answer's body, keeping what the pointers reach.
fn parse_ok<'a>(answer: Answer<'a>, pointers: &[Pointer]) -> Option<Document<'a>> {
    match answer {
        Answer::Response { status, body } if is_success(status) => parse(body, pointers),
        _ => None,
    }
}

/// Parses `body` exactly as `serde_json::from_slice::<Value>` would accept it.
pub fn parse<'a>(body: &'a [u8], pointers: &[Pointer]) -> Option<Document<'a>> {
    // JSON is UTF-8 as a whole: checked once here rather than string by string as
    // `from_slice` does. serde_json accepts no body that is not.
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Select::root(pointers)
        .deserialize(&mut deserializer)
        .and_then(|document| deserializer.end().map(|()| document));
    match parsed {
        Ok(document) => Some(document),
        // Not JSON, or one of serde_json's special cases (see `RAW_VALUE_KEY`): whatever
        // serde_json makes of it, whole.
        Err(_) => serde_json::from_str(text).ok().map(Document::from_value),
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Judges a pair of answers (see the module documentation for the rules).
pub fn judge<'a, P: Locate>(
    stable: Answer<'a>,
    shadow: Answer<'a>,
    pointers: &[P],
    tolerance: f64,
) -> Judgement<'a> {
    P::with_parsed(pointers, |pointers| {
        let mut judgement = Judgement {
            stable: parse_ok(stable, pointers),
            shadow: parse_ok(shadow, pointers),
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
    })
}

/// Compares two documents at each pointer.
pub fn compare_documents<J: Json>(
    stable: &J,
    shadow: &J,
    pointers: &[impl Locate],
    tolerance: f64,
    diffs: &mut impl DiffSink,
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
pub fn values_agree<J: Json>(
    expected: &J,
    actual: &J,
    tolerance: f64,
    diffs: &mut impl DiffSink,
) -> bool {
    match (expected.kind(), actual.kind()) {
        (Kind::Number(a), Kind::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => {
                let diff = (a - b).abs();
                diffs.push(diff);
                diff <= tolerance
            }
            _ => a == b,
        },
        (Kind::String(a), Kind::String(b)) => a == b,
        (Kind::Bool(a), Kind::Bool(b)) => a == b,
        (Kind::Null, Kind::Null) => true,
        (Kind::Array(a), Kind::Array(b)) => {
            let mut agree = a.len() == b.len();
            for (x, y) in a.iter().zip(b) {
                agree &= values_agree(x, y, tolerance, diffs);
            }
            agree
        }
        (Kind::Object(a), Kind::Object(b)) => {
            let mut agree = a.len() == b.len();
            for (key, x) in a {
                match actual.member(key) {
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
pub fn for_each_prediction<'a, J: Json>(
    document: &'a J,
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

fn walk<'a, J: Json>(
    value: &'a J,
    depth: usize,
    budget: &mut usize,
    f: &mut impl FnMut(Prediction<'a>),
) {
    if *budget == 0 || depth > MAX_DEPTH {
        return;
    }
    match value.kind() {
        Kind::Number(n) => {
            if let Some(x) = n.as_f64() {
                *budget -= 1;
                f(Prediction::Number(x));
            }
        }
        Kind::String(s) => {
            *budget -= 1;
            f(Prediction::Label(s));
        }
        Kind::Bool(b) => {
            *budget -= 1;
            f(Prediction::Bool(b));
        }
        Kind::Null | Kind::Partial => {}
        Kind::Array(items) => items.iter().for_each(|v| walk(v, depth + 1, budget, f)),
        Kind::Object(members) => members.for_each(|(_, v)| walk(v, depth + 1, budget, f)),
    }
}

// Parsing. Every value goes through serde_json's `deserialize_any`, kept or not, so the body
// is checked exactly as when it is parsed into a `Value` (UTF-8, escapes, numbers in range,
// nesting depth). A body this parser refuses is handed to serde_json whole (see `parse`).

/// An object whose first key is this becomes, in a `Value`, the JSON text its value holds
/// (serde_json's `raw_value`). Left to serde_json itself.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// More pointers than this and the whole document is kept.
const MAX_SELECTED: usize = 64;

/// The part of a value the pointers reach: `active` holds the pointers whose first `depth`
/// tokens led here.
#[derive(Clone, Copy)]
struct Select<'p> {
    pointers: &'p [Pointer],
    depth: usize,
    active: u64,
}

impl<'p> Select<'p> {
    fn root(pointers: &'p [Pointer]) -> Self {
        let active = if pointers.len() > MAX_SELECTED {
            u64::MAX
        } else {
            pointers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.tokens.is_some())
                .fold(0, |mask, (i, _)| mask | 1 << i)
        };
        Select {
            pointers,
            depth: 0,
            active,
        }
    }

    fn tokens(&self, i: usize) -> &'p [Token] {
        self.pointers[i].tokens.as_deref().unwrap_or_default()
    }

    fn each(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.pointers.len().min(MAX_SELECTED)).filter(|i| self.active & (1 << i) != 0)
    }

    /// Whether a pointer ends here, so the whole value is kept.
    fn whole(&self) -> bool {
        self.pointers.len() > MAX_SELECTED
            || self.each().any(|i| self.tokens(i).len() == self.depth)
    }

    /// The pointers that go on through the member or element `step` names.
    fn step(&self, step: impl Fn(&Token) -> bool) -> Select<'p> {
        let active = self
            .each()
            .filter(|&i| step(&self.tokens(i)[self.depth]))
            .fold(0, |mask, i| mask | 1 << i);
        Select {
            pointers: self.pointers,
            depth: self.depth + 1,
            active,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Select<'_> {
    type Value = Document<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.active == 0 {
            deserializer
                .deserialize_any(Skip)
                .map(|()| Document::Skipped)
        } else if self.whole() {
            deserializer.deserialize_any(Whole)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

/// A key, borrowed from the body unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(Key)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

fn refuse_raw_value<E: de::Error>(first: bool, key: &str) -> Result<(), E> {
    if first && key == RAW_VALUE_KEY {
        Err(E::custom("serde_json's raw value"))
    } else {
        Ok(())
    }
}

/// Members sorted by key, the last of duplicate keys kept, as in a serde_json map.
fn as_map<'a>(mut members: Vec<(Cow<'a, str>, Document<'a>)>) -> Vec<(Cow<'a, str>, Document<'a>)> {
    if !members.is_sorted_by(|a, b| a.0 < b.0) {
        // Stable, so duplicates stay in order; each later one then takes the earlier's place.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
    }
    members
}

/// A value kept whole.
struct Whole;

impl<'de> DeserializeSeed<'de> for Whole {
    type Value = Document<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(Whole)
    }
}

impl<'de> Visitor<'de> for Whole {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    // The scalars as serde_json's `Value` takes them.
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Document::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Document::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Document::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(n).map_or(Document::Null, Document::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Document::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Document::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Document::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Document::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Document::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Whole)? {
            items.push(item);
        }
        Ok(Document::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            refuse_raw_value(members.is_empty(), &key)?;
            members.push((key, map.next_value_seed(Whole)?));
        }
        Ok(Document::Object(as_map(members)))
    }
}

impl<'de> Visitor<'de> for Select<'_> {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    // A scalar where a pointer goes on: it leads nowhere.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Document::Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut index = 0;
        loop {
            let next = self.step(|token| token.index == Some(index));
            match seq.next_element_seed(next)? {
                None => break,
                Some(Document::Skipped) if next.active == 0 => {}
                Some(item) => items.push((index, item)),
            }
            index += 1;
        }
        Ok(Document::PartialArray(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            refuse_raw_value(first, &key)?;
            first = false;
            let next = self.step(|token| token.key == key);
            let value = map.next_value_seed(next)?;
            if next.active != 0 {
                members.push((key, value));
            }
        }
        Ok(Document::PartialObject(as_map(members)))
    }
}

/// A value checked as JSON and dropped.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            refuse_raw_value(first, &key)?;
            first = false;
            map.next_value_seed(Skip)?;
        }
        Ok(())
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
    fn recorded_differences_are_bounded_and_spread() {
        // About a megabyte of numbers: every pair judged, at most MAX_DIFFS recorded.
        let n = 200_000;
        let stable = Value::Array((0..n).map(|i| json!(i as f64)).collect());
        let mut shifted = stable.clone();
        shifted[n - 1] = json!(n as f64 + 1.0);
        assert!(serde_json::to_vec(&stable).unwrap().len() > 1_000_000);
        let mut diffs = Diffs::default();
        let outcome = compare_documents(&stable, &shifted, &ptrs(&[""]), 0.5, &mut diffs);
        assert_eq!(outcome, Outcome::Mismatch, "the last pair is judged too");
        assert_eq!(diffs.pairs(), n as u64);
        let kept = diffs.as_slice().len();
        assert!((MAX_DIFFS / 2..=MAX_DIFFS).contains(&kept), "{kept}");

        // Which pairs are kept: each difference is its pair's index, so the kept ones show it.
        let mut diffs = Diffs::default();
        for i in 0..1000 {
            diffs.push(i as f64);
        }
        let kept: Vec<f64> = diffs.as_slice().to_vec();
        let expected: Vec<f64> = (0..1000).step_by(16).map(|i| i as f64).collect();
        assert_eq!(
            kept, expected,
            "every 16th pair, from the first to the last stride"
        );

        // Small answers keep every difference.
        let mut diffs = Diffs::default();
        for i in 0..MAX_DIFFS {
            diffs.push(i as f64);
        }
        assert_eq!(diffs.as_slice().len(), MAX_DIFFS);
    }

    /// What the comparison made of two bodies when it parsed them into `Value`s: the outcome,
    /// every difference, and each track's predictions.
    fn with_values(
        stable: &[u8],
        shadow: &[u8],
        pointers: &[String],
        tolerance: f64,
    ) -> (Option<Outcome>, Vec<f64>, Vec<String>, Vec<String>) {
        let (Ok(s), Ok(c)) = (
            serde_json::from_slice::<Value>(stable),
            serde_json::from_slice::<Value>(shadow),
        ) else {
            return (None, Vec::new(), Vec::new(), Vec::new());
        };
        let mut diffs = Vec::new();
        let outcome = compare_documents(&s, &c, pointers, tolerance, &mut diffs);
        let mut ps = Vec::new();
        for_each_prediction(&s, pointers, |p| ps.push(format!("{p:?}")));
        let mut pc = Vec::new();
        for_each_prediction(&c, pointers, |p| pc.push(format!("{p:?}")));
        (Some(outcome), diffs, ps, pc)
    }

    /// The same through `Document`s, parsed as the router parses them.
    fn with_documents(
        stable: &[u8],
        shadow: &[u8],
        pointers: &[String],
        tolerance: f64,
    ) -> (Option<Outcome>, Vec<f64>, Vec<String>, Vec<String>) {
        let parsed: Vec<Pointer> = pointers.iter().map(|p| Pointer::parse(p)).collect();
        let (Some(s), Some(c)) = (parse(stable, &parsed), parse(shadow, &parsed)) else {
            return (None, Vec::new(), Vec::new(), Vec::new());
        };
        let mut diffs = Vec::new();
        let outcome = compare_documents(&s, &c, &parsed, tolerance, &mut diffs);
        let mut ps = Vec::new();
        for_each_prediction(&s, &parsed, |p| ps.push(format!("{p:?}")));
        let mut pc = Vec::new();
        for_each_prediction(&c, &parsed, |p| pc.push(format!("{p:?}")));
        (Some(outcome), diffs, ps, pc)
    }

    fn same_either_way(stable: &str, shadow: &str, pointers: &[String], tolerance: f64) {
        assert_eq!(
            with_documents(stable.as_bytes(), shadow.as_bytes(), pointers, tolerance),
            with_values(stable.as_bytes(), shadow.as_bytes(), pointers, tolerance),
            "{stable} / {shadow} at {pointers:?}"
        );
    }

    #[test]
    fn documents_accept_what_values_accept() {
        let p = ptrs(&["/a"]);
        for body in [
            r#"{"a":1}"#,
            r#"{"a":1} "#,
            r#"{"a":1} x"#,
            r#"{"b":1e400,"a":1}"#,
            r#"{"b":"\ud800","a":1}"#,
            r#"{"b":"\x","a":1}"#,
            "{\"b\":\"\u{1}\",\"a\":1}",
            r#"{"$serde_json::private::RawValue":"{\"a\":2}"}"#,
            r#"{"$serde_json::private::RawValue":"nope"}"#,
            r#"{"b":{"$serde_json::private::RawValue":"[1]"},"a":1}"#,
            r#"{"a":{"$serde_json::private::RawValue":"[1]"}}"#,
            r#"{"b":1,"$serde_json::private::RawValue":"[1]","a":1}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":[1,2],"b":[3],"a":{"x":null}}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
            "",
            "nul",
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":-0}"#,
        ] {
            same_either_way(body, body, &p, 0.0);
            same_either_way(body, r#"{"a":2}"#, &p, 0.5);
        }
        let mut deep = "1".to_string();
        for _ in 0..200 {
            deep = format!(r#"{{"a":[{deep}]}}"#);
        }
        same_either_way(&deep, &deep, &ptrs(&["/a/0/a"]), 0.0);
        let bad_utf8 = b"{\"b\":\"\xff\",\"a\":1}";
        assert_eq!(
            with_documents(bad_utf8, bad_utf8, &p, 0.0),
            with_values(bad_utf8, bad_utf8, &p, 0.0)
        );
    }

    #[test]
    fn documents_hold_only_what_pointers_reach() {
        let body =
            br#"{"model_version":"v1","predictions":[{"score":0.5,"label":"a"}],"debug":[1,2,3]}"#;
        let document = parse(body, &[Pointer::parse("/predictions/0")]).unwrap();
        let Document::PartialObject(members) = &document else {
            panic!("{document:?}")
        };
        assert_eq!(members.len(), 1, "{document:?}");
        assert!(matches!(&members[0].1, Document::PartialArray(items) if items.len() == 1));
        // Strings without escapes are borrowed from the body.
        let whole = parse(body, &[Pointer::parse("")]).unwrap();
        assert!(matches!(
            whole.member("model_version"),
            Some(Document::String(Cow::Borrowed("v1")))
        ));
    }

    mod equivalence {
        use super::*;
        use proptest::prelude::*;

        const KEYS: [&str; 7] = ["a", "b", "0", "1", "10", "a/b", "m~n"];

        /// JSON text, with duplicate keys, escapes and numbers of every kind.
        fn text() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                Just("true".to_string()),
                Just("false".to_string()),
                (-3i64..3).prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                (-2.0f64..2.0).prop_map(|x| format!("{x:e}")),
                prop::sample::select(vec![
                    "0.5",
                    "0.50000001",
                    "1e2",
                    "-0",
                    "-0.0",
                    "1E-7",
                    "18446744073709551616",
                    r#""a""#,
                    r#""b""#,
                    r#""\u00e9""#,
                    r#""a\"b""#,
                    r#""\ud83d\ude00""#,
                    r#""""#,
                ])
                .prop_map(str::to_string),
            ];
            leaf.prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..5)
                        .prop_map(|members| {
                            let members: Vec<String> = members
                                .iter()
                                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                                .collect();
                            format!("{{{}}}", members.join(","))
                        }),
                ]
            })
        }

        fn pointer() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => prop::collection::vec(
                    prop::sample::select(vec!["a", "b", "0", "1", "10", "01", "a~1b", "m~0n", ""]),
                    0..4
                )
                .prop_map(|tokens| tokens.iter().map(|t| format!("/{t}")).collect::<String>()),
                1 => Just("no-slash".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn documents_judge_as_values_do(
                stable in text(),
                other in text(),
                same in any::<bool>(),
                pointers in prop::collection::vec(pointer(), 0..3),
                tolerance in prop::sample::select(vec![0.0, 1e-6, 0.5]),
            ) {
                let shadow = if same { stable.clone() } else { other };
                prop_assert_eq!(
                    with_documents(stable.as_bytes(), shadow.as_bytes(), &pointers, tolerance),
                    with_values(stable.as_bytes(), shadow.as_bytes(), &pointers, tolerance)
                );
            }
        }
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
