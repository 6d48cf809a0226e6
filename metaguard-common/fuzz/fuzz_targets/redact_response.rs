//! Feeds arbitrary responses to the redaction scanner, whole and split, and
//! checks what it promises: lengths kept, only secret bytes changed (to the
//! filler), the same output however the stream is split or run, and a known secret
//! inside a credentials answer (framed by the fuzzer's choice of chunk sizes
//! and segment splits) never coming out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metaguard_common::redact::{RedactTable, Scanner, FILLER, SHAPES_ALL};

const SECRET: &[u8] = b"SeCrEtVaLuE0123456789";

fuzz_target!(|data: &[u8]| {
    let table = RedactTable::new(&[b"client_secret"]).unwrap();
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mask = SHAPES_ALL;
    // Arbitrary stream: whole vs split at pieces of (ctl % 13 + 1) bytes.
    let mut whole = rest.to_vec();
    Scanner::new(mask).redact(&mut whole, &table);
    assert_eq!(whole.len(), rest.len());
    for (a, b) in rest.iter().zip(&whole) {
        assert!(a == b || *b == FILLER);
    }
    // Runs between steps (the kernel's way) change nothing.
    let mut fast = rest.to_vec();
    let mut sf = Scanner::new(mask);
    sf.redact_fast(&mut fast, &table);
    assert_eq!(fast, whole);
    let mut split = Vec::new();
    let mut s = Scanner::new(mask);
    for piece in rest.chunks(ctl as usize % 13 + 1) {
        let mut p = piece.to_vec();
        s.redact(&mut p, &table);
        split.extend(p);
    }
    assert_eq!(split, whole);

    // A credentials answer around the fuzz bytes (as an unrelated JSON
    // value), chunked at fuzz-chosen sizes: the secret never survives.
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"Code\":\"");
    // No alphanumerics: no piece of the secret can come from here.
    body.extend(
        rest.iter()
            .filter(|&&b| b != b'"' && b != b'\\' && b >= 0x20 && !b.is_ascii_alphanumeric()),
    );
    body.extend_from_slice(b"\",\"SecretAccessKey\" : \"");
    body.extend_from_slice(SECRET);
    body.extend_from_slice(b"\"}");
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let sizes: Vec<usize> = rest.iter().map(|&b| b as usize % 17 + 1).collect();
    let mut i = 0;
    let mut k = 0;
    while i < body.len() {
        let n = sizes.get(k).copied().unwrap_or(5).min(body.len() - i);
        resp.extend(format!("{n:x}\r\n").bytes());
        resp.extend_from_slice(&body[i..i + n]);
        resp.extend_from_slice(b"\r\n");
        i += n;
        k += 1;
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let mut s = Scanner::new(mask);
    for piece in resp.clone().chunks_mut(ctl as usize % 7 + 1) {
        s.redact(piece, &table);
        assert!(!piece.windows(4).any(|w| SECRET.windows(4).any(|x| x == w)));
    }
    assert!(s.at_boundary(), "a well-formed chunked answer ends on a boundary");
});
