extern crate std;
use std::{format, string::String, vec::Vec};

use super::*;

/// Feeds every byte; returns the parser and the last step.
fn run_with(input: &[u8], table: &HeaderTable) -> (HttpParser, Step) {
    let mut p = HttpParser::new();
    let mut last = Step::Continue;
    for &b in input {
        last = p.feed(b, table);
    }
    (p, last)
}

fn run(input: &[u8]) -> (HttpParser, Step) {
    run_with(input, &HeaderTable::with_defaults())
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// Canonical target of `GET <target>`, or the rejection.
fn canon(target: &str) -> Result<String, Reject> {
    match run(&get(target)) {
        (p, Step::Complete) => Ok(String::from_utf8(p.target().to_vec()).unwrap()),
        (_, Step::Reject(r)) => Err(r),
        (_, s) => panic!("{target}: ended with {s:?}"),
    }
}

fn reject_of(input: &[u8]) -> Reject {
    match run(input).1 {
        Step::Reject(r) => r,
        s => panic!(
            "{:?}: not rejected but {s:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn minimal_request_completes() {
    let (p, step) = run(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    assert_eq!(step, Step::Complete);
    assert!(p.is_complete());
    assert_eq!(p.method(), b"GET");
    assert_eq!(p.target(), b"/latest/meta-data/");
    assert_eq!(p.path(), b"/latest/meta-data/");
    assert!(!p.has_query());
    assert!(!p.is_absolute_form());
    assert_eq!(p.content_length(), 0);
    assert!(!p.has_content_length());
    assert_eq!(p.header_block_len(), 58);
    assert_eq!(p.headers_seen(), 0);
    assert_eq!(p.rejected(), None);
}

#[test]
fn request_line_step_comes_before_headers() {
    let table = HeaderTable::with_defaults();
    let mut p = HttpParser::new();
    let line = b"PUT /latest/api/token HTTP/1.0\r\n";
    let steps: Vec<Step> = line.iter().map(|&b| p.feed(b, &table)).collect();
    assert_eq!(steps.last(), Some(&Step::RequestLine));
    assert!(steps[..steps.len() - 1]
        .iter()
        .all(|s| *s == Step::Continue));
    assert!(p.request_line_done());
    assert!(!p.is_complete());
    assert_eq!(p.method(), b"PUT");
    assert_eq!(p.target(), b"/latest/api/token");
    assert_eq!(p.feed(b'\r', &table), Step::Continue);
    assert_eq!(p.feed(b'\n', &table), Step::Complete);
    assert_eq!(p.feed(b'x', &table), Step::Complete, "complete is sticky");
}

#[test]
fn zeroed_state_is_a_fresh_parser() {
    // SAFETY: the state is integers and integer arrays only.
    let zeroed: HttpParser = unsafe { core::mem::zeroed() };
    assert_eq!(zeroed, HttpParser::new());
    assert_eq!(HttpParser::default(), HttpParser::new());
    let zeroed: HeaderTable = unsafe { core::mem::zeroed() };
    assert_eq!(zeroed, HeaderTable::EMPTY);
}

#[test]
fn state_size() {
    assert_eq!(core::mem::size_of::<HttpParser>(), 364);
    assert_eq!(core::mem::size_of::<HttpKey>(), 280);
    assert_eq!(core::mem::size_of::<HeaderTable>(), 528);
}

#[test]
fn reject_numbers_and_names_are_stable() {
    for (i, r) in Reject::ALL.iter().enumerate() {
        assert_eq!(*r as u8 as usize, i + 1);
        assert_eq!(Reject::from_u8(*r as u8), *r);
        let name = r.name();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{name}"
        );
    }
    assert_eq!(Reject::from_u8(0), Reject::BadState);
    assert_eq!(Reject::from_u8(200), Reject::BadState);
    assert_eq!(Reject::TransferEncoding as u8, 21);
    assert_eq!(Reject::NonAscii.name(), "non-ascii");
}

#[test]
fn corrupt_state_rejects() {
    let table = HeaderTable::EMPTY;
    let mut p = HttpParser::new();
    p.phase = 99;
    assert_eq!(p.feed(b'G', &table), Step::Reject(Reject::BadState));
    let mut p = HttpParser::new();
    p.phase = 15;
    p.reject = 0;
    assert_eq!(p.feed(b'G', &table), Step::Reject(Reject::BadState));
}

#[test]
fn each_reject_reason() {
    let long_target = format!("/{}", "a".repeat(256));
    let deep = "/a".repeat(33);
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(4096));
    let cases: &[(&[u8], Reject)] = &[
        (b"G(T / HTTP/1.1\r\n\r\n", Reject::BadMethod),
        (b" / HTTP/1.1\r\n\r\n", Reject::BadMethod),
        (b"ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n", Reject::BadMethod),
        (b"GET a HTTP/1.1\r\n\r\n", Reject::BadTarget),
        (b"GET /a<b HTTP/1.1\r\n\r\n", Reject::BadTarget),
        (b"GET  / HTTP/1.1\r\n\r\n", Reject::BadTarget),
        (&get(&long_target), Reject::TargetTooLong),
        (&get(&deep), Reject::TooDeep),
        (b"GET /a%2Fb HTTP/1.1\r\n\r\n", Reject::EncodedSlash),
        (b"GET /a%2fb HTTP/1.1\r\n\r\n", Reject::EncodedSlash),
        (b"GET /a\\b HTTP/1.1\r\n\r\n", Reject::Backslash),
        (b"GET /a%5cb HTTP/1.1\r\n\r\n", Reject::Backslash),
        (b"GET /a\0 HTTP/1.1\r\n\r\n", Reject::Nul),
        (b"GET /a%00 HTTP/1.1\r\n\r\n", Reject::Nul),
        (b"GET /?a=%00 HTTP/1.1\r\n\r\n", Reject::Nul),
        (b"GET /a%2 HTTP/1.1\r\n\r\n", Reject::BadPercent),
        (b"GET /a%zz HTTP/1.1\r\n\r\n", Reject::BadPercent),
        (b"GET /?a=%g0 HTTP/1.1\r\n\r\n", Reject::BadPercent),
        (b"GET /.. HTTP/1.1\r\n\r\n", Reject::DotAboveRoot),
        (b"GET /a/../../b HTTP/1.1\r\n\r\n", Reject::DotAboveRoot),
        (b"GET /%2e%2E/ HTTP/1.1\r\n\r\n", Reject::DotAboveRoot),
        (b"GET /a#b HTTP/1.1\r\n\r\n", Reject::Fragment),
        (b"GET /a?b#c HTTP/1.1\r\n\r\n", Reject::Fragment),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", Reject::AsteriskForm),
        (b"OPTIONS *x HTTP/1.1\r\n\r\n", Reject::AsteriskForm),
        (b"GET /\r\n", Reject::BadVersion),
        (b"GET / HTTP/2.0\r\n\r\n", Reject::BadVersion),
        (b"GET / http/1.1\r\n\r\n", Reject::BadVersion),
        (b"GET / HTTP/1.2\r\n\r\n", Reject::BadVersion),
        (b"GET / HTTP/1.1 \r\n\r\n", Reject::BadVersion),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Reject::BadVersion),
        (b"GET / HTTP/1.1\rX", Reject::BareCr),
        (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", Reject::BareCr),
        (b"GET / HTTP/1.1\r\n\rX", Reject::BareCr),
        (b"GET / HTTP/1.1\n\n", Reject::BareLf),
        (b"GET / HTTP/1.1\r\nA: b\n\r\n", Reject::BareLf),
        (b"GET / HTTP/1.1\r\n\n", Reject::BareLf),
        (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", Reject::ObsFold),
        (b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n", Reject::ObsFold),
        (b"GET / HTTP/1.1\r\n: b\r\n\r\n", Reject::BadHeaderName),
        (b"GET / HTTP/1.1\r\nA(: b\r\n\r\n", Reject::BadHeaderName),
        (b"GET / HTTP/1.1\r\nAb\r\n\r\n", Reject::BadHeaderName),
        (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", Reject::SpaceBeforeColon),
        (
            b"GET / HTTP/1.1\r\nA\t: b\r\n\r\n",
            Reject::SpaceBeforeColon,
        ),
        (b"GET / HTTP/1.1\r\nA: b\0\r\n\r\n", Reject::BadHeaderValue),
        (
            b"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
            Reject::BadHeaderValue,
        ),
        (b"GET / HTTP/1.1\r\nA: \x01\r\n\r\n", Reject::BadHeaderValue),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
            Reject::DuplicateContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1234567890\r\n\r\n",
            Reject::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            Reject::TransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\ntransfer-encoding:\r\n\r\n",
            Reject::TransferEncoding,
        ),
        (big.as_bytes(), Reject::HeaderBlockTooLarge),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", Reject::NonAscii),
        (b"G\xc3T / HTTP/1.1\r\n\r\n", Reject::NonAscii),
        (b"GET / HTTP/1.1\r\n\xc3: b\r\n\r\n", Reject::NonAscii),
    ];
    let mut covered = Vec::new();
    for (input, want) in cases {
        assert_eq!(
            reject_of(input),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        covered.push(*want);
    }
    for r in Reject::ALL {
        assert!(
            matches!(r, Reject::BadState | Reject::SplitPipeline) || covered.contains(&r),
            "{} has no example",
            r.name()
        );
    }
}

#[test]
fn rejection_is_sticky() {
    let table = HeaderTable::with_defaults();
    let mut p = HttpParser::new();
    for &b in b"GET /a\\" {
        p.feed(b, &table);
    }
    for &b in b" HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n" {
        assert_eq!(p.feed(b, &table), Step::Reject(Reject::Backslash));
    }
    assert_eq!(p.rejected(), Some(Reject::Backslash));
    p.reset();
    assert_eq!(p, HttpParser::new());
}

#[test]
fn canonicalisation_table() {
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a//b", "/a/b"),
        ("//a///b//", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/%61", "/a"),
        ("/%7e", "/~"),
        ("/%7E%2d%5F%2E", "/~-_."),
        ("/%3a", "/%3A"),
        ("/%3A", "/%3A"),
        ("/%c3%a9", "/%C3%A9"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E/b", "/a/b"),
        ("/a/.%2e", "/"),
        ("/a/", "/a/"),
        ("/a", "/a"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/...", "/..."),
        ("/.../a", "/.../a"),
        ("/.a/a.", "/.a/a."),
        ("/..a/", "/..a/"),
        ("/a?b=c", "/a?b=c"),
        ("/a/../b?x/../y", "/b?x/../y"),
        ("/a?", "/a?"),
        ("/a?b?c/d", "/a?b?c/d"),
        ("/a?q=%2f%3a%61", "/a?q=%2F%3A%61"),
        ("/a/.?q", "/a/?q"),
        ("/:@!$&'()*+,;=", "/:@!$&'()*+,;="),
    ];
    for (input, want) in cases {
        assert_eq!(canon(input).as_deref(), Ok(*want), "{input}");
    }
}

#[test]
fn absolute_form() {
    let (p, step) = run(b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n");
    assert_eq!(step, Step::Complete);
    assert!(p.is_absolute_form());
    assert_eq!(p.target(), b"/latest/meta-data/");
    assert_eq!(canon("HTTP://metadata.google.internal:80"), Ok("/".into()));
    assert_eq!(canon("hTtP://[fd00:ec2::254]?x"), Ok("/?x".into()));
    assert_eq!(canon("http://h//a/../b"), Ok("/b".into()));
    assert_eq!(canon("https://h/"), Err(Reject::BadTarget));
    assert_eq!(canon("http:/h/"), Err(Reject::BadTarget));
    assert_eq!(canon("http:///a"), Err(Reject::BadTarget));
    assert_eq!(canon("http://u@h/"), Err(Reject::BadTarget));
    assert_eq!(canon("http://h%41/"), Err(Reject::BadTarget));
    assert_eq!(canon("http://h\\/"), Err(Reject::Backslash));
    assert_eq!(canon("169.254.169.254:80"), Err(Reject::BadTarget));
    assert_eq!(canon("http://h/.."), Err(Reject::DotAboveRoot));
}

#[test]
fn length_limits() {
    let fits = format!("/{}", "a".repeat(255));
    assert_eq!(canon(&fits).map(|t| t.len()), Ok(256));
    let over = format!("/{}?", "a".repeat(255));
    assert_eq!(canon(&over), Err(Reject::TargetTooLong));
    // Removed bytes do not count.
    let shrinks = format!("/{}/..", "a".repeat(200));
    assert_eq!(canon(&shrinks), Ok("/".into()));
    let deep = "/a".repeat(32);
    assert_eq!(canon(&deep).map(|t| t.len()), Ok(64));
    // A trailing slash needs a 33rd entry, even when `..` would follow.
    assert_eq!(canon(&format!("{deep}/")), Err(Reject::TooDeep));
    assert_eq!(canon(&format!("{deep}/../b")), Err(Reject::TooDeep));
    let below = "/a".repeat(30);
    assert_eq!(canon(&format!("{below}/b/..")), Ok(format!("{below}/")));
}

#[test]
fn header_block_limit_is_4096_bytes() {
    let head = "GET / HTTP/1.1\r\nX: ";
    let fill = 4096 - head.len() - 4;
    let exact = format!("{head}{}\r\n\r\n", "v".repeat(fill));
    let (p, step) = run(exact.as_bytes());
    assert_eq!(step, Step::Complete);
    assert_eq!(p.header_block_len(), 4096);
    let over = format!("{head}{}\r\n\r\n", "v".repeat(fill + 1));
    assert_eq!(reject_of(over.as_bytes()), Reject::HeaderBlockTooLarge);
}

#[test]
fn method_is_case_sensitive_and_kept() {
    let (p, _) = run(b"get / HTTP/1.1\r\n\r\n");
    assert_eq!(p.method(), b"get");
    let (p, step) = run(b"ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n");
    assert_eq!(step, Step::Complete);
    assert_eq!(p.method(), b"ABCDEFGHIJKLMNOP");
    let patterns: &[(&[u8], &[u8])] = &[(b"GET", b"/")];
    assert!(!matches(&run(b"get / HTTP/1.1\r\n\r\n").0, patterns));
    assert!(matches(&run(b"GET / HTTP/1.1\r\n\r\n").0, patterns));
}

#[test]
fn header_table_matches_whole_names_case_insensitively() {
    let mut table = HeaderTable::with_defaults();
    assert_eq!(table.push(b"Metadata-Flavor"), Ok(1));
    assert_eq!(table.push(b"metadata-flavor"), Ok(1));
    assert_eq!(table.push(b"X"), Ok(2));
    assert_eq!(table.push(b"bad name"), Err(TableError::BadName));
    assert_eq!(table.push(&[b'a'; 33]), Err(TableError::BadName));
    assert_eq!(table.find(b"X-AWS-EC2-METADATA-TOKEN"), Some(TOKEN_ENTRY));
    let req = b"PUT /latest/api/token HTTP/1.1\r\nX-aws-EC2-metadata-TOKEN: abc\r\n\
        Metadata-Flavorx: Google\r\nx-: 1\r\nXY: 1\r\nx: 2\r\n\r\n";
    let (p, step) = run_with(req, &table);
    assert_eq!(step, Step::Complete);
    assert_eq!(p.headers_seen(), 0b101);
    let (p, _) = run_with(b"GET / HTTP/1.1\r\nMETADATA-FLAVOR:Google\r\n\r\n", &table);
    assert_eq!(p.headers_seen(), 0b010);
    let (p, _) = run_with(
        b"GET / HTTP/1.1\r\nx-aws-ec2-metadata-toke: a\r\n\r\n",
        &table,
    );
    assert_eq!(p.headers_seen(), 0);
}

#[test]
fn header_table_fills_up() {
    let mut table = HeaderTable::EMPTY;
    for i in 0..16u8 {
        assert_eq!(table.push(format!("h{i}").as_bytes()), Ok(i));
    }
    assert_eq!(table.push(b"h99"), Err(TableError::Full));
    let name = "a".repeat(32);
    let mut table = HeaderTable::EMPTY;
    table.push(b"z").unwrap();
    assert_eq!(table.push(name.as_bytes()), Ok(1));
    let req = format!("GET / HTTP/1.1\r\n{name}: 1\r\n{name}a: 1\r\n\r\n");
    assert_eq!(run_with(req.as_bytes(), &table).0.headers_seen(), 0b10);
}

#[test]
fn content_length() {
    let cases: &[(&[u8], u32)] = &[
        (b"Content-Length: 0", 0),
        (b"content-length:42", 42),
        (b"CONTENT-LENGTH: \t 007 \t", 7),
        (b"Content-Length: 999999999", 999_999_999),
    ];
    for (field, want) in cases {
        let mut req = b"POST / HTTP/1.1\r\n".to_vec();
        req.extend_from_slice(field);
        req.extend_from_slice(b"\r\n\r\n");
        let (p, step) = run(&req);
        assert_eq!(step, Step::Complete, "{:?}", String::from_utf8_lossy(field));
        assert_eq!(p.content_length(), *want);
        assert!(p.has_content_length());
    }
    // Names that only start like Content-Length are ordinary fields.
    let (p, step) = run(b"POST / HTTP/1.1\r\nContent-Lengthx: y\r\nContent-Lengt: y\r\n\r\n");
    assert_eq!(step, Step::Complete);
    assert!(!p.has_content_length());
    let (_, step) = run(b"POST / HTTP/1.1\r\nTransfer-Encodings: y\r\n\r\n");
    assert_eq!(step, Step::Complete);
}

#[test]
fn header_values_allow_obs_text_and_ows() {
    let (_, step) = run(b"GET / HTTP/1.1\r\nA: \xc3\xa9 \t x\r\nB:\r\nC: \t\r\n\r\n");
    assert_eq!(step, Step::Complete);
}

#[test]
fn same_bytes_same_state() {
    let inputs: &[&[u8]] = &[
        b"GET /a/./b/../c?x=%2f HTTP/1.1\r\nX-aws-ec2-metadata-token: t\r\nContent-Length: 3\r\n\r\n",
        b"GET /a%2Fb HTTP/1.1\r\n\r\n",
        b"GET http://h/x HTTP/1.1\r\n",
    ];
    let table = HeaderTable::with_defaults();
    for input in inputs {
        let (all_at_once, last) = run(input);
        // A second parser, reused after a reset, fed one byte per call with
        // its state copied between calls (as the kernel does via a map).
        let mut reused = HttpParser::new();
        for &b in b"PUT /junk HTTP/1.0\r\nA: b\r\n\r\n" {
            reused.feed(b, &table);
        }
        reused.reset();
        let mut step = Step::Continue;
        for &b in input.iter() {
            let mut stored = reused;
            step = stored.feed(b, &table);
            reused = stored;
        }
        assert_eq!(reused, all_at_once);
        assert_eq!(step, last);
    }
}

#[test]
fn pipelined_requests() {
    let stream = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b/../c HTTP/1.1\r\n\r\n";
    let table = HeaderTable::with_defaults();
    let mut p = HttpParser::new();
    let mut targets = Vec::new();
    let mut body_left = 0u32;
    for &b in stream.iter() {
        if body_left > 0 {
            body_left -= 1;
            continue;
        }
        if let Step::Complete = p.feed(b, &table) {
            targets.push((p.method().to_vec(), p.target().to_vec()));
            body_left = p.content_length();
            p.reset();
        }
    }
    assert_eq!(
        targets,
        [
            (b"POST".to_vec(), b"/a".to_vec()),
            (b"GET".to_vec(), b"/c".to_vec())
        ]
    );
}

#[test]
fn boundaries() {
    let cases: &[(&str, &[u16])] = &[
        ("/", &[]),
        ("/a", &[1]),
        ("/a/", &[1]),
        ("/a/b", &[1, 3]),
        ("/a/b/", &[1, 3]),
        ("/a/b/..", &[1]),
        ("/a?x/y", &[1]),
    ];
    for (target, want) in cases {
        let (p, _) = run(&get(target));
        let got: Vec<u16> = (0..p.boundary_count())
            .map(|i| p.boundary(i).unwrap())
            .collect();
        assert_eq!(&got, want, "{target}");
        assert_eq!(p.boundary(p.boundary_count()), None);
    }
}

#[test]
fn wildcard_prefix_semantics() {
    let patterns: &[(&[u8], &[u8])] = &[(b"GET", b"/a/*")];
    let yes = ["/a/b", "/a/b/c", "/a/b/", "/a//b", "/x/../a/b", "/a/%62"];
    let no = [
        "/a/", "/a", "/ab", "/ab/c", "/a/b?x", "/a/?x", "/", "/b/a/c",
    ];
    for t in yes {
        assert!(matches(&run(&get(t)).0, patterns), "{t} should match");
    }
    for t in no {
        assert!(!matches(&run(&get(t)).0, patterns), "{t} should not match");
    }
    let root: &[(&[u8], &[u8])] = &[(b"GET", b"/*")];
    assert!(matches(&run(&get("/x")).0, root));
    assert!(!matches(&run(&get("/")).0, root));
}

#[test]
fn exact_patterns() {
    let patterns: &[(&[u8], &[u8])] = &[
        (b"GET", b"/latest/meta-data/"),
        (b"PUT", b"/latest/api/token"),
        (b"GET", b"/q?x=%2f"),
    ];
    let (p, _) = run(b"GET http://h/latest/./meta-data// HTTP/1.1\r\n\r\n");
    assert!(matches(&p, patterns));
    assert!(!matches(&run(&get("/latest/meta-data")).0, patterns));
    assert!(matches(
        &run(b"PUT /latest/api/token HTTP/1.1\r\n\r\n").0,
        patterns
    ));
    assert!(!matches(&run(&get("/latest/api/token")).0, patterns));
    assert!(matches(&run(&get("/q?x=%2F")).0, patterns));
    assert!(!matches(&run(&get("/q?x=/")).0, patterns));
    // Nothing matches until the request line is accepted.
    assert!(!matches(
        &run(b"GET /latest/meta-data/ HTTP/1.1").0,
        patterns
    ));
}

#[test]
fn canonical_patterns() {
    let c = |p: &[u8]| canonical_pattern(p).map(|(b, n, w)| (b[..n].to_vec(), w));
    assert_eq!(c(b"/a/./b//c"), Ok((b"/a/b/c".to_vec(), false)));
    assert_eq!(c(b"/a/*"), Ok((b"/a/".to_vec(), true)));
    assert_eq!(c(b"/*"), Ok((b"/".to_vec(), true)));
    assert_eq!(c(b"/a*"), Ok((b"/a*".to_vec(), false)));
    assert_eq!(c(b"/a?x=%7e"), Ok((b"/a?x=%7E".to_vec(), false)));
    assert_eq!(c(b"/a?x/*"), Err(Reject::BadTarget));
    assert_eq!(c(b"a/b"), Err(Reject::BadTarget));
    assert_eq!(c(b"/a b"), Err(Reject::BadTarget));
    assert_eq!(c(b"/a/%2f"), Err(Reject::EncodedSlash));
    assert_eq!(c(b"/.."), Err(Reject::DotAboveRoot));
}

#[test]
fn key_constructors() {
    let k = HttpKey::exact(7, b"GET", b"/a").unwrap();
    assert_eq!(
        (k.scope, k.kind, k.method_len, k.target_len),
        (7, KEY_EXACT, 3, 2)
    );
    assert!(k.method[3..].iter().all(|&b| b == 0) && k.target[2..].iter().all(|&b| b == 0));
    assert_eq!(
        HttpKey::prefix(7, b"GET", b"/a/").map(|k| k.kind),
        Ok(KEY_PREFIX)
    );
    assert_eq!(HttpKey::prefix(7, b"GET", b"/a"), Err(KeyError::NotPrefix));
    assert_eq!(HttpKey::exact(7, b"", b"/"), Err(KeyError::BadMethod));
    assert_eq!(
        HttpKey::exact(7, &[b'A'; 17], b"/"),
        Err(KeyError::BadMethod)
    );
    assert_eq!(
        HttpKey::exact(7, b"GET", &[b'a'; 257]),
        Err(KeyError::TargetTooLong)
    );
}

#[test]
fn filled_keys_equal_constructed_keys() {
    let (p, _) = run(&get("/x/y/z"));
    let mut key = HttpKey::ZERO;
    key.target = [0xAA; TARGET_CAP];
    key.method = [0xAA; MAX_METHOD];
    p.fill_exact(3, &mut key);
    assert_eq!(key, HttpKey::exact(3, b"GET", b"/x/y/z").unwrap());
    assert!(p.fill_prefix(3, 1, &mut key));
    assert_eq!(key, HttpKey::prefix(3, b"GET", b"/x/").unwrap());
    assert!(!p.fill_prefix(3, 3, &mut key));
    let (p, _) = run(&get("/x/y?q"));
    assert!(!p.fill_prefix(3, 0, &mut key));
}
