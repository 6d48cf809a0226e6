//! Feeds arbitrary bytes to the HTTP request checker and asserts properties
//! of what it accepts, not only that it does not crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaguard_common::http::{canonical_pattern, matches, HeaderTable, HttpParser, Step};

/// Methods and patterns for the matcher cross-check.
const PATTERNS: &[(&[u8], &[u8])] = &[
    (b"GET", b"/latest/meta-data/"),
    (b"GET", b"/latest/meta-data/placement/*"),
    (b"PUT", b"/latest/api/token"),
    (b"GET", b"/a/*"),
    (b"GET", b"/a/b?x=1"),
    (b"POST", b"/*"),
    (b"get", b"/a/"),
];

fuzz_target!(|data: &[u8]| {
    let mut table = HeaderTable::with_defaults();
    table.push(b"metadata-flavor").unwrap();
    let mut p = HttpParser::new();
    // The kernel's way: the fast path first, the full step otherwise.
    let mut q = HttpParser::new();
    let mut outcome = Step::Continue;
    let mut line_seen = false;
    for (i, &b) in data.iter().enumerate() {
        let step = p.feed(b, &table);
        let fast_step = if q.feed_fast(b) {
            Step::Continue
        } else {
            q.feed(b, &table)
        };
        assert_eq!((fast_step, &q), (step, &p), "fast path = full step");
        match (outcome, step) {
            (Step::Reject(r), s) => assert_eq!(s, Step::Reject(r), "rejection is sticky"),
            (Step::Complete, s) => assert_eq!(s, Step::Complete, "completion is sticky"),
            (_, Step::RequestLine) => {
                assert!(!line_seen, "one request line");
                line_seen = true;
            }
            (_, Step::Complete) => {
                assert!(line_seen, "request line before completion");
                assert_eq!(p.header_block_len() as usize, i + 1);
            }
            _ => {}
        }
        if step != Step::RequestLine {
            outcome = step;
        }
    }
    if p.is_complete() {
        check_accepted(&p, data, &table);
    }
});

fn check_accepted(p: &HttpParser, data: &[u8], table: &HeaderTable) {
    let target = p.target();
    let path = p.path();
    assert!(data.starts_with(p.method()) && data.get(p.method().len()) == Some(&b' '));
    assert!(p.header_block_len() <= 4096);
    assert!(p.content_length() <= 999_999_999);
    assert!(p.has_content_length() || p.content_length() == 0);
    assert_eq!(p.has_query(), target.len() > path.len());
    assert!(target.starts_with(path));
    check_path(path);
    check_escapes(target);
    assert!(!target.contains(&b'\\') && !target.contains(&b'#') && !target.contains(&b' '));
    check_idempotent(p, table);
    assert_eq!(matches(p, PATTERNS), reference_match(p), "key lookup vs strings");
}

fn check_path(path: &[u8]) {
    let has = |needle: &[u8]| path.windows(needle.len()).any(|w| w == needle);
    assert!(path.starts_with(b"/"));
    assert!(!has(b"//") && !has(b"/./") && !has(b"/../"));
    assert!(!path.ends_with(b"/.") && !path.ends_with(b"/.."));
    assert!(!has(b"%2F") && !has(b"%2f") && !has(b"%5C") && !has(b"%00"));
    assert!(!has(b"?"));
}

/// Every `%` starts an escape with uppercase hex digits.
fn check_escapes(target: &[u8]) {
    for (i, &b) in target.iter().enumerate() {
        if b == b'%' {
            let hex = target.get(i + 1..i + 3).expect("complete escape");
            assert!(hex.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)));
        }
    }
}

fn check_idempotent(p: &HttpParser, table: &HeaderTable) {
    let mut again = HttpParser::new();
    let mut last = Step::Continue;
    let req = b"GET ".iter().chain(p.target()).chain(b" HTTP/1.1\r\n\r\n");
    for &b in req {
        last = again.feed(b, table);
    }
    assert_eq!(last, Step::Complete);
    assert_eq!(again.target(), p.target());
    assert_eq!(again.path(), p.path());
}

/// Exact: same method and target. Wildcard `P/*`: same method, no query,
/// the path starts with `P/` and is longer.
fn reference_match(p: &HttpParser) -> bool {
    PATTERNS.iter().any(|&(method, pattern)| {
        let (buf, len, wildcard) = canonical_pattern(pattern).expect("pattern canonicalises");
        let canon = &buf[..len];
        let target = p.target();
        method == p.method()
            && if wildcard {
                !p.has_query() && target.len() > canon.len() && target.starts_with(canon)
            } else {
                target == canon
            }
    })
}
