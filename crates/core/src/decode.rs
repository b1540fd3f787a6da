//! Input framing: turns a byte stream (plain or gzipped) into the JSON text of one record at a time,
//! without ever holding more than one record plus a read buffer.
//!
//! Accepted framings, detected from the bytes rather than a file name:
//! - CloudTrail S3 log files `{"Records":[...]}` (the array is streamed element by element),
//! - a JSON array of records,
//! - one record, or many records one after another (NDJSON).
//!
//! The splitter checks structure only (strings, brackets, nesting); a record's content is decoded later,
//! and only when it could matter.

use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;
use thiserror::Error;

/// Bytes read from the source at a time.
pub const READ_CHUNK: usize = 256 * 1024;
/// A record larger than this is refused (CloudTrail's own records stay far below it).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Deeper nesting is refused by the splitter, long before it could exhaust anything.
pub const MAX_DEPTH: usize = 512;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
const RECORDS_KEY: &[u8] = b"Records";

/// A problem in the input. [`DecodeError::is_fatal`] tells whether the rest of the stream is lost.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("read failed after byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("not CloudTrail JSON: expected '{{' or '[' at byte {offset}")]
    NotJson { offset: u64 },
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax { offset: u64, reason: &'static str },
    #[error("invalid JSON on the line at byte {offset}: {reason}; skipped to the next line")]
    BadLine { offset: u64, reason: &'static str },
    #[error("input ends inside a value that starts at byte {offset} (truncated?)")]
    Truncated { offset: u64 },
    #[error("record #{index} at byte {offset} is larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge { index: u64, offset: u64 },
    #[error("record #{index} at byte {offset} is not a JSON object")]
    NotAnObject { index: u64, offset: u64 },
}

impl DecodeError {
    /// A fatal error ends the stream; after a recoverable one the next record follows.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::NotAnObject { .. } | Self::BadLine { .. })
    }

    /// The 1-based position of the record concerned, when known.
    pub fn record_index(&self) -> Option<u64> {
        match self {
            Self::TooLarge { index, .. } | Self::NotAnObject { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// The JSON text of one record and where it was found.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'b> {
    pub bytes: &'b [u8],
    /// 1-based position of the record in its stream.
    pub index: u64,
    /// Byte offset of the record in the (decompressed) stream.
    pub offset: u64,
}

/// Wraps a reader so gzip input (one member or several) is inflated on the fly; anything else passes through.
pub fn decompressed<'r, R: Read + 'r>(reader: R) -> io::Result<Box<dyn Read + 'r>> {
    let mut reader = BufReader::with_capacity(READ_CHUNK, reader);
    // One read may return a single byte (a network body can), so the magic is read to its end before
    // deciding; otherwise a gzipped file would be taken for plain text depending on how it arrived.
    let mut head = [0; GZIP_MAGIC.len()];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let reader = io::Cursor::new(head).take(got as u64).chain(reader);
    if head[..got] == GZIP_MAGIC {
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between top-level values.
    TopLevel,
    /// Inside a records array, before an element or the closing bracket.
    ArrayElement {
        in_container: bool,
        first: bool,
    },
    /// Inside a records array, after an element.
    ArrayAfterElement {
        in_container: bool,
    },
    /// Inside `{"Records":[...]}` after its array: further keys or the closing brace.
    ContainerRest,
    Done,
}

/// What a top-level object turned out to be.
enum ObjectShape {
    /// `{... "Records": [` : stream the array starting at this buffer index.
    Container { array_body: usize },
    /// Any other object: one record ending at this buffer index (exclusive).
    Record { end: usize },
}

enum Scan<T> {
    Complete(T),
    /// More input is needed to decide.
    Incomplete,
    Invalid {
        at: usize,
        reason: &'static str,
    },
}

/// Splits a stream of JSON into records. A lending iterator: each record borrows the internal buffer
/// until the next call.
#[derive(Debug)]
pub struct RecordStream<R> {
    reader: R,
    buf: Vec<u8>,
    /// Cursor into `buf`; everything before it has been consumed.
    pos: usize,
    /// Absolute stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    mode: Mode,
    records: u64,
    started: bool,
}

impl<R: Read> RecordStream<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            base: 0,
            eof: false,
            mode: Mode::TopLevel,
            records: 0,
            started: false,
        }
    }

    /// Records (and non-record elements) seen so far.
    pub fn position(&self) -> u64 {
        self.records
    }

    fn offset_of(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    /// Drops consumed bytes and reads another chunk. Returns false at end of input.
    fn fill(&mut self) -> Result<bool, DecodeError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        loop {
            match self.reader.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Err(DecodeError::Io {
                        offset: self.offset_of(len),
                        source,
                    });
                }
            }
        }
    }

    /// Index of the next non-whitespace byte at or after `pos`, reading more as needed.
    fn skip_ws(&mut self) -> Result<Option<usize>, DecodeError> {
        loop {
            if !self.started && self.pos == 0 {
                if self.buf.len() < UTF8_BOM.len() && !self.eof {
                    self.fill()?;
                    continue;
                }
                if self.buf.starts_with(&UTF8_BOM) {
                    self.pos = UTF8_BOM.len();
                }
                self.started = true;
            }
            if let Some(i) = self.buf[self.pos..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
            {
                self.pos += i;
                return Ok(Some(self.pos));
            }
            self.pos = self.buf.len();
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Runs `scan` over the buffer from `pos`, reading more input until it can decide.
    fn scan_buffered<T>(
        &mut self,
        scan: impl Fn(&[u8], bool) -> Scan<T>,
    ) -> Result<Scan<T>, DecodeError> {
        loop {
            match scan(&self.buf[self.pos..], self.eof) {
                Scan::Incomplete if !self.eof => {
                    if self.buf.len() - self.pos > MAX_RECORD_BYTES {
                        return Err(DecodeError::TooLarge {
                            index: self.records + 1,
                            offset: self.offset_of(self.pos),
                        });
                    }
                    self.fill()?;
                }
                Scan::Complete(v) => return Ok(Scan::Complete(v)),
                Scan::Invalid { at, reason } => {
                    return Ok(Scan::Invalid {
                        at: self.pos + at,
                        reason,
                    });
                }
                Scan::Incomplete => return Ok(Scan::Incomplete),
            }
        }
    }

    /// Skips to the line after the current position: how NDJSON input recovers from a bad line.
    fn skip_line(&mut self) -> Result<(), DecodeError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
                self.pos += i + 1;
                return Ok(());
            }
            self.pos = self.buf.len();
            if !self.fill()? {
                return Ok(());
            }
        }
    }

    fn fail(&mut self, error: DecodeError) -> Option<Result<RawRecord<'_>, DecodeError>> {
        if error.is_fatal() {
            self.mode = Mode::Done;
        }
        Some(Err(error))
    }

    /// The next record, a recoverable problem with one, or a fatal error; `None` at the end.
    pub fn next_record(&mut self) -> Option<Result<RawRecord<'_>, DecodeError>> {
        match self.advance() {
            Ok(Some((start, end))) => Some(Ok(RawRecord {
                bytes: &self.buf[start..end],
                index: self.records,
                offset: self.offset_of(start),
            })),
            Ok(None) => None,
            Err(e) => self.fail(e),
        }
    }

    /// Moves to the next record and returns its span in the buffer.
    fn advance(&mut self) -> Result<Option<(usize, usize)>, DecodeError> {
        loop {
            match self.mode {
                Mode::Done => return Ok(None),
                Mode::TopLevel => {
                    let Some(at) = self.skip_ws()? else {
                        self.mode = Mode::Done;
                        return Ok(None);
                    };
                    // A read inside `scan_buffered` drops consumed bytes and shifts the buffer under
                    // `at`: where the value starts in the stream is taken before it.
                    let value_offset = self.offset_of(at);
                    match self.buf[at] {
                        b'{' => match self.scan_buffered(object_shape)? {
                            Scan::Complete(ObjectShape::Container { array_body }) => {
                                self.pos += array_body;
                                self.mode = Mode::ArrayElement {
                                    in_container: true,
                                    first: true,
                                };
                            }
                            Scan::Complete(ObjectShape::Record { end }) => {
                                let start = self.pos;
                                self.pos += end;
                                self.records += 1;
                                return Ok(Some((start, self.pos)));
                            }
                            Scan::Incomplete => {
                                return Err(DecodeError::Truncated {
                                    offset: value_offset,
                                });
                            }
                            Scan::Invalid { at: bad, reason } => {
                                // One broken line of NDJSON should not cost the lines after it.
                                let offset = self.offset_of(bad);
                                self.records += 1;
                                self.skip_line()?;
                                return Err(DecodeError::BadLine { offset, reason });
                            }
                        },
                        b'[' => {
                            self.pos += 1;
                            self.mode = Mode::ArrayElement {
                                in_container: false,
                                first: true,
                            };
                        }
                        _ if self.records == 0 => {
                            return Err(DecodeError::NotJson {
                                offset: self.offset_of(at),
                            });
                        }
                        _ => {
                            let offset = self.offset_of(at);
                            self.records += 1;
                            self.skip_line()?;
                            return Err(DecodeError::BadLine {
                                offset,
                                reason: "expected a record object",
                            });
                        }
                    }
                }
                Mode::ArrayElement {
                    in_container,
                    first,
                } => {
                    let Some(at) = self.skip_ws()? else {
                        return Err(DecodeError::Truncated {
                            offset: self.offset_of(self.pos),
                        });
                    };
                    if first && self.buf[at] == b']' {
                        self.pos += 1;
                        self.mode = end_of_array(in_container);
                        continue;
                    }
                    let is_object = self.buf[at] == b'{';
                    let value_offset = self.offset_of(at);
                    match self.scan_buffered(value_end)? {
                        Scan::Complete(end) => {
                            let start = self.pos;
                            self.pos += end;
                            self.records += 1;
                            self.mode = Mode::ArrayAfterElement { in_container };
                            if is_object {
                                return Ok(Some((start, self.pos)));
                            }
                            return Err(DecodeError::NotAnObject {
                                index: self.records,
                                offset: self.offset_of(start),
                            });
                        }
                        Scan::Incomplete => {
                            return Err(DecodeError::Truncated {
                                offset: value_offset,
                            });
                        }
                        Scan::Invalid { at: bad, reason } => {
                            return Err(DecodeError::Syntax {
                                offset: self.offset_of(bad),
                                reason,
                            });
                        }
                    }
                }
                Mode::ArrayAfterElement { in_container } => {
                    let Some(at) = self.skip_ws()? else {
                        return Err(DecodeError::Truncated {
                            offset: self.offset_of(self.pos),
                        });
                    };
                    match self.buf[at] {
                        b',' => {
                            self.pos += 1;
                            self.mode = Mode::ArrayElement {
                                in_container,
                                first: false,
                            };
                        }
                        b']' => {
                            self.pos += 1;
                            self.mode = end_of_array(in_container);
                        }
                        _ => {
                            return Err(DecodeError::Syntax {
                                offset: self.offset_of(at),
                                reason: "expected ',' or ']' after a record",
                            });
                        }
                    }
                }
                Mode::ContainerRest => {
                    let Some(at) = self.skip_ws()? else {
                        return Err(DecodeError::Truncated {
                            offset: self.offset_of(self.pos),
                        });
                    };
                    match self.buf[at] {
                        b'}' => {
                            self.pos += 1;
                            self.mode = Mode::TopLevel;
                        }
                        b',' => {
                            self.pos += 1;
                            match self.scan_buffered(member)? {
                                Scan::Complete(Member::RecordsArray { array_body }) => {
                                    self.pos += array_body;
                                    self.mode = Mode::ArrayElement {
                                        in_container: true,
                                        first: true,
                                    };
                                }
                                Scan::Complete(Member::Other { end }) => self.pos += end,
                                Scan::Incomplete => {
                                    return Err(DecodeError::Truncated {
                                        offset: self.offset_of(self.pos),
                                    });
                                }
                                Scan::Invalid { at: bad, reason } => {
                                    return Err(DecodeError::Syntax {
                                        offset: self.offset_of(bad),
                                        reason,
                                    });
                                }
                            }
                        }
                        _ => {
                            return Err(DecodeError::Syntax {
                                offset: self.offset_of(at),
                                reason: "expected ',' or '}' after the Records array",
                            });
                        }
                    }
                }
            }
        }
    }
}

fn end_of_array(in_container: bool) -> Mode {
    if in_container {
        Mode::ContainerRest
    } else {
        Mode::TopLevel
    }
}

enum Member {
    RecordsArray { array_body: usize },
    Other { end: usize },
}

fn skip_ws_in(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(bytes.len(), |i| from + i)
}

/// Reads `"key" : value` starting at whitespace before the key. Stops at the opening bracket of a
/// `Records` array so the caller can stream it.
fn member(bytes: &[u8], eof: bool) -> Scan<Member> {
    let key_start = skip_ws_in(bytes, 0);
    if key_start >= bytes.len() {
        return Scan::Incomplete;
    }
    if bytes[key_start] != b'"' {
        return Scan::Invalid {
            at: key_start,
            reason: "expected a key",
        };
    }
    let Some(key_end) = string_end(bytes, key_start + 1) else {
        return Scan::Incomplete;
    };
    let colon = skip_ws_in(bytes, key_end);
    if colon >= bytes.len() {
        return Scan::Incomplete;
    }
    if bytes[colon] != b':' {
        return Scan::Invalid {
            at: colon,
            reason: "expected ':' after a key",
        };
    }
    let value = skip_ws_in(bytes, colon + 1);
    if value >= bytes.len() {
        return Scan::Incomplete;
    }
    if &bytes[key_start + 1..key_end - 1] == RECORDS_KEY && bytes[value] == b'[' {
        return Scan::Complete(Member::RecordsArray {
            array_body: value + 1,
        });
    }
    match value_end(&bytes[value..], eof) {
        Scan::Complete(len) => Scan::Complete(Member::Other { end: value + len }),
        Scan::Incomplete => Scan::Incomplete,
        Scan::Invalid { at, reason } => Scan::Invalid {
            at: value + at,
            reason,
        },
    }
}

/// Decides what a top-level object (starting at `bytes[0] == b'{'`) is, walking its keys.
fn object_shape(bytes: &[u8], eof: bool) -> Scan<ObjectShape> {
    let mut at = skip_ws_in(bytes, 1);
    if at >= bytes.len() {
        return Scan::Incomplete;
    }
    if bytes[at] == b'}' {
        return Scan::Complete(ObjectShape::Record { end: at + 1 });
    }
    loop {
        match member(&bytes[at..], eof) {
            Scan::Complete(Member::RecordsArray { array_body }) => {
                return Scan::Complete(ObjectShape::Container {
                    array_body: at + array_body,
                });
            }
            Scan::Complete(Member::Other { end }) => at += end,
            Scan::Incomplete => return Scan::Incomplete,
            Scan::Invalid { at: bad, reason } => {
                return Scan::Invalid {
                    at: at + bad,
                    reason,
                };
            }
        }
        at = skip_ws_in(bytes, at);
        match bytes.get(at) {
            None => return Scan::Incomplete,
            Some(b',') => at += 1,
            Some(b'}') => return Scan::Complete(ObjectShape::Record { end: at + 1 }),
            Some(_) => {
                return Scan::Invalid {
                    at,
                    reason: "expected ',' or '}' in an object",
                };
            }
        }
    }
}

/// Index just past the closing quote of a string whose body starts at `from`; `None` if the buffer ends first.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        // A backslash escapes the next byte, whatever it is.
        i += 2;
        if i > bytes.len() {
            return None;
        }
    }
}

/// Length of the JSON value at the start of `bytes`, checking strings, bracket pairs and nesting depth.
/// Scalars are delimited only; their content is checked when a record is decoded.
fn value_end(bytes: &[u8], eof: bool) -> Scan<usize> {
    match bytes.first() {
        None => Scan::Incomplete,
        Some(b'"') => string_end(bytes, 1).map_or(Scan::Incomplete, Scan::Complete),
        Some(b'{' | b'[') => container_end(bytes),
        Some(_) => scalar_end(bytes, eof),
    }
}

fn scalar_end(bytes: &[u8], eof: bool) -> Scan<usize> {
    let end = bytes
        .iter()
        .position(|b| b.is_ascii_whitespace() || b"{}[]\",:".contains(b));
    match end {
        Some(0) => Scan::Invalid {
            at: 0,
            reason: "expected a value",
        },
        Some(len) => Scan::Complete(len),
        None if eof => Scan::Complete(bytes.len()),
        None => Scan::Incomplete,
    }
}

fn container_end(bytes: &[u8]) -> Scan<usize> {
    let mut closers: Vec<u8> = Vec::with_capacity(16);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match string_end(bytes, i + 1) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return Scan::Incomplete,
            },
            b'{' | b'[' if closers.len() >= MAX_DEPTH => {
                return Scan::Invalid {
                    at: i,
                    reason: "nesting too deep",
                };
            }
            b'{' => closers.push(b'}'),
            b'[' => closers.push(b']'),
            close @ (b'}' | b']') => {
                if closers.pop() != Some(close) {
                    return Scan::Invalid {
                        at: i,
                        reason: "mismatched bracket",
                    };
                }
                if closers.is_empty() {
                    return Scan::Complete(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scan::Incomplete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> (Vec<String>, Vec<String>) {
        let mut stream = RecordStream::new(input);
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        while let Some(item) = stream.next_record() {
            match item {
                Ok(r) => records.push(String::from_utf8_lossy(r.bytes).into_owned()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (records, errors)
    }

    #[test]
    fn s3_log_file() {
        let (records, errors) = split(br#"{"Records":[{"a":1},{"b":"x}]"}, {"c":[{}]}]}"#);
        assert_eq!(records, [r#"{"a":1}"#, r#"{"b":"x}]"}"#, r#"{"c":[{}]}"#]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn records_key_after_other_keys_and_keys_after_the_array() {
        let (records, errors) =
            split(br#"{ "digest" : {"x":[1]}, "Records" : [ {"a":1} ] , "more": "y" }"#);
        assert_eq!(records, [r#"{"a":1}"#]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn json_array_and_ndjson_and_single_record() {
        assert_eq!(
            split(b" [ {\"a\":1} ,\n{\"b\":2} ] ").0,
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(
            split(b"{\"a\":1}\n{\"b\":\"\\\"\"}\r\n\n{}").0,
            ["{\"a\":1}", "{\"b\":\"\\\"\"}", "{}"]
        );
        assert_eq!(split(b"\xef\xbb\xbf{\"a\":1}").0, ["{\"a\":1}"]);
        assert_eq!(split(b"[]").0, Vec::<String>::new());
        assert_eq!(split(b"{\"Records\":[]}").0, Vec::<String>::new());
        assert_eq!(split(b"  \n ").0, Vec::<String>::new());
    }

    #[test]
    fn a_bad_ndjson_line_costs_only_itself() {
        let (records, errors) = split(b"{\"a\":1}\n{\"b\":]}\n{\"c\":3}\n");
        assert_eq!(records, ["{\"a\":1}", "{\"c\":3}"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("byte 13"), "{}", errors[0]);
    }

    #[test]
    fn non_object_elements_are_reported_and_skipped() {
        let (records, errors) = split(b"[1, {\"a\":1}, \"x\", [2], null, {}]");
        assert_eq!(records, ["{\"a\":1}", "{}"]);
        assert_eq!(errors.len(), 4);
        assert!(
            errors[0].starts_with("record #1 at byte 1"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn garbage_is_not_json() {
        let (records, errors) = split(b"\x00\x01\x02binary");
        assert!(records.is_empty());
        assert_eq!(
            errors,
            ["not CloudTrail JSON: expected '{' or '[' at byte 0"]
        );
    }

    #[test]
    fn truncated_input_keeps_what_came_before() {
        let (records, errors) = split(br#"{"Records":[{"a":1},{"b":"#);
        assert_eq!(records, [r#"{"a":1}"#]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("truncated"), "{errors:?}");
        let (_, errors) = split(br#"{"Records":[{"a":1}"#);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn a_truncated_value_is_located_whatever_the_reads() {
        // Two reads: the second refill drops the consumed whitespace and shifts the buffer.
        let input = (&b"  "[..]).chain(&b"{\"a\":"[..]);
        let mut stream = RecordStream::new(input);
        let error = stream
            .next_record()
            .expect("an item")
            .expect_err("truncated");
        assert!(
            matches!(error, DecodeError::Truncated { offset: 2 }),
            "{error}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut deep = b"[".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        let (records, errors) = split(&deep);
        assert!(records.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("nesting too deep"), "{errors:?}");
    }

    #[test]
    fn records_spanning_many_reads() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(READ_CHUNK * 3 + 17));
        let input = format!("{{\"Records\":[{big},{{\"a\":1}}]}}");
        let (records, errors) = split(input.as_bytes());
        assert!(errors.is_empty());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], big);
    }

    #[test]
    fn positions_are_absolute() {
        let input = format!(
            "{{\"Records\":[{{\"pad\":\"{}\"}},{{\"a\":1}}]}}",
            "y".repeat(READ_CHUNK)
        );
        let mut stream = RecordStream::new(input.as_bytes());
        let first_len = stream.next_record().expect("one").expect("ok").bytes.len();
        let second = stream.next_record().expect("two").expect("ok");
        assert_eq!(second.index, 2);
        assert_eq!(second.offset, (12 + first_len + 1) as u64);
        assert_eq!(
            &input.as_bytes()[second.offset as usize..][..7],
            b"{\"a\":1}"
        );
    }

    #[test]
    fn gzip_is_detected_by_its_bytes() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(br#"{"Records":[{"a":1}]}"#).expect("compress");
        let compressed = gz.finish().expect("compress");
        let reader = decompressed(&compressed[..]).expect("open");
        let mut stream = RecordStream::new(reader);
        assert_eq!(
            stream.next_record().expect("one").expect("ok").bytes,
            b"{\"a\":1}"
        );
        assert!(stream.next_record().is_none());
    }

    #[test]
    fn gzip_is_detected_when_its_magic_arrives_in_two_reads() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(br#"{"a":1}"#).expect("compress");
        let compressed = gz.finish().expect("compress");
        let split = (&compressed[..1]).chain(&compressed[1..]);
        let mut stream = RecordStream::new(decompressed(split).expect("open"));
        assert_eq!(
            stream.next_record().expect("one").expect("ok").bytes,
            b"{\"a\":1}"
        );
        assert!(stream.next_record().is_none());
    }

    #[test]
    fn truncated_gzip_is_an_io_error_after_the_good_records() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let body: String = (0..2000).map(|i| format!("{{\"n\":{i}}},")).collect();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(format!("{{\"Records\":[{body}{{}}]}}").as_bytes())
            .expect("compress");
        let compressed = gz.finish().expect("compress");
        let cut = &compressed[..compressed.len() / 2];
        let mut stream = RecordStream::new(decompressed(cut).expect("open"));
        let (mut good, mut errors) = (0, Vec::new());
        while let Some(item) = stream.next_record() {
            match item {
                Ok(_) => good += 1,
                Err(e) => errors.push(e),
            }
        }
        assert!(good > 0 && good < 2001, "{good}");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].is_fatal());
    }
}
