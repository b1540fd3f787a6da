//! Property tests: no input panics the decoder, and every framing yields exactly the records written,
//! wherever the reads happen to split the bytes.

use std::io::{self, Read};

use proptest::prelude::*;
use serde_json::{Value, json};
use tokenwatch_core::decode::RecordStream;
use tokenwatch_core::{ErrorCodes, Scanner, Validation};

/// A reader that hands out its bytes in the given chunk sizes, as a network or a decompressor might.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".*".prop_map(Value::from),
        "[\\[\\]{}\",:\\\\ \n]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("[a-zA-Z@]{1,10}", json_value(), 0..5),
        prop::option::of(prop_oneof![
            Just("ExpiredToken".to_owned()),
            Just("AccessDenied".to_owned()),
            ".{0,6}"
        ]),
    )
        .prop_map(|(fields, code)| {
            let mut map: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(code) = code {
                map.insert("errorCode".into(), json!(code));
            }
            Value::Object(map)
        })
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Container,
    Array,
    Ndjson,
    Pretty,
}

fn frame(records: &[Value], framing: Framing) -> Vec<u8> {
    let text = match framing {
        Framing::Container => json!({ "Records": records }).to_string(),
        Framing::Array => Value::Array(records.to_vec()).to_string(),
        Framing::Ndjson => records.iter().map(|r| format!("{r}\n")).collect(),
        Framing::Pretty => {
            serde_json::to_string_pretty(&json!({"Records": records, "trailer": {"k": [1]}}))
                .unwrap_or_default()
        }
    };
    text.into_bytes()
}

fn split_all(data: Vec<u8>, sizes: Vec<usize>) -> (Vec<Value>, usize) {
    let mut stream = RecordStream::new(Chunked {
        data,
        at: 0,
        sizes,
        turn: 0,
    });
    let (mut records, mut errors) = (Vec::new(), 0);
    while let Some(item) = stream.next_record() {
        match item {
            Ok(raw) => records.push(serde_json::from_slice(raw.bytes).unwrap_or(Value::Null)),
            Err(_) => errors += 1,
        }
    }
    (records, errors)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_framing_yields_the_records_written(
        records in prop::collection::vec(record(), 0..12),
        framing in prop_oneof![Just(Framing::Container), Just(Framing::Array), Just(Framing::Ndjson), Just(Framing::Pretty)],
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let (got, errors) = split_all(frame(&records, framing), sizes);
        prop_assert_eq!(errors, 0);
        prop_assert_eq!(got, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048), sizes in prop::collection::vec(1usize..300, 1..4)) {
        let _ = split_all(data.clone(), sizes);
        let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
        let counts = scanner.scan(&data[..], |_| {}, |_| {});
        prop_assert!(counts.malformed <= counts.records);
    }

    #[test]
    fn arbitrary_json_never_panics_and_non_objects_are_malformed(value in json_value()) {
        let data = value.to_string().into_bytes();
        let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
        let mut failures = 0;
        let counts = scanner.scan(&data[..], |_| failures += 1, |_| {});
        if let Value::Array(items) = &value {
            let others = items.iter().filter(|v| !v.is_object()).count() as u64;
            prop_assert_eq!(counts.records, items.len() as u64);
            prop_assert!(counts.malformed >= others);
        }
        prop_assert_eq!(failures, 0, "no record here has an eventTime");
    }

    #[test]
    fn corrupting_a_byte_never_panics(records in prop::collection::vec(record(), 1..6), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut data = frame(&records, Framing::Container);
        let i = at.index(data.len());
        data[i] = byte;
        let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
        let counts = scanner.scan(&data[..], |_| {}, |_| {});
        prop_assert!(counts.malformed <= counts.records);
    }
}

#[test]
fn deeply_nested_record_is_malformed_not_a_crash() {
    let depth = 100_000;
    let mut data = b"{\"Records\":[{\"errorCode\":\"ExpiredToken\",\"x\":".to_vec();
    data.extend(std::iter::repeat_n(b'[', depth));
    data.extend(std::iter::repeat_n(b']', depth));
    data.extend(b"}]}");
    let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
    let mut problems = Vec::new();
    let counts = scanner.scan(&data[..], |_| {}, |p| problems.push(p.to_string()));
    assert_eq!(counts.malformed, 1, "{problems:?}");
    assert!(problems[0].contains("nesting too deep"), "{problems:?}");
}

#[test]
fn nesting_serde_refuses_is_malformed_not_a_crash() {
    // Within the splitter's limit but beyond serde_json's recursion limit.
    let depth = 300;
    let mut data = b"[{\"errorCode\":\"ExpiredToken\",\"x\":".to_vec();
    data.extend(std::iter::repeat_n(b'[', depth));
    data.extend(std::iter::repeat_n(b']', depth));
    data.extend(b"}]");
    let scanner = Scanner::new(ErrorCodes::default(), Validation::Structure);
    let counts = scanner.scan(&data[..], |_| {}, |_| {});
    assert_eq!((counts.records, counts.malformed), (1, 1));
}
