extern crate std;
use super::*;
use std::{format, string::String, vec, vec::Vec};

const CREDS: &str = r#"{
  "Code" : "Success",
  "LastUpdated" : "2024-01-01T00:00:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAFAKE",
  "SecretAccessKey" : "se/cr\"et",
  "Token" : "TOKENVALUE",
  "Expiration" : "2099-01-01T00:00:00Z"
}"#;

fn table() -> RedactTable {
    RedactTable::new(&[b"client_secret"]).unwrap()
}

fn response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chunked(body: &str, size: usize) -> String {
    let mut s = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for c in body.as_bytes().chunks(size) {
        s.push_str(&format!("{:x};ext=1\r\n", c.len()));
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push_str("\r\n");
    }
    s.push_str("0\r\nX-Trailer: t\r\n\r\n");
    s
}

fn run(mask: u32, input: &str) -> (String, Scanner) {
    let mut s = Scanner::new(mask);
    let mut buf = input.as_bytes().to_vec();
    s.redact(&mut buf, &table());
    (String::from_utf8(buf).unwrap(), s)
}

/// The same, fed in pieces of `n` bytes.
fn run_split(mask: u32, input: &str, n: usize) -> String {
    let mut s = Scanner::new(mask);
    let t = table();
    let mut out = Vec::new();
    for piece in input.as_bytes().chunks(n) {
        let mut p = piece.to_vec();
        s.redact(&mut p, &t);
        out.extend(p);
    }
    String::from_utf8(out).unwrap()
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

#[test]
fn masks_aws_credentials_and_keeps_the_rest() {
    let (out, mut s) = run(SHAPE_AWS_CREDENTIALS, &response(CREDS));
    assert_eq!(out.len(), response(CREDS).len());
    assert!(
        out.contains(&format!(r#""AccessKeyId" : "{}""#, stars(8))),
        "{out}"
    );
    assert!(out.contains(&format!(r#""SecretAccessKey" : "{}""#, stars(9))));
    assert!(out.contains(&format!(r#""Token" : "{}""#, stars(10))));
    assert!(out.contains(r#""Type" : "AWS-HMAC""#) && out.contains(r#""Code" : "Success""#));
    assert!(!out.contains("ASIAFAKE") && !out.contains("TOKENVALUE") && !out.contains("se/cr"));
    assert_eq!(s.take_report(), (SHAPE_AWS_CREDENTIALS, 3));
    assert!(s.at_boundary());
}

#[test]
fn entitled_stream_is_untouched() {
    let input = response(CREDS);
    let (out, mut s) = run(0, &input);
    assert_eq!(out, input);
    assert_eq!(s.take_report(), (0, 0));
    // Other shapes leave AWS keys alone.
    let (out, _) = run(SHAPE_GCP_TOKEN, &input);
    assert_eq!(out, input);
}

#[test]
fn every_split_gives_the_same_output() {
    for input in [response(CREDS), chunked(CREDS, 7), chunked(CREDS, 1)] {
        let whole = run(SHAPE_AWS_CREDENTIALS, &input).0;
        for n in 1..40 {
            assert_eq!(
                run_split(SHAPE_AWS_CREDENTIALS, &input, n),
                whole,
                "split {n}"
            );
        }
    }
}

#[test]
fn chunk_framing_inside_a_secret_is_kept() {
    for size in [1, 3, 5, 16, 64] {
        let input = chunked(CREDS, size);
        let (out, mut s) = run(SHAPE_AWS_CREDENTIALS, &input);
        assert_eq!(out.len(), input.len());
        // Reassemble the chunked body and compare with the CL result.
        let body = dechunk(&out);
        let expect = run(SHAPE_AWS_CREDENTIALS, &response(CREDS)).0;
        assert!(expect.ends_with(&body), "size {size}: {body}");
        assert_eq!(s.take_report().0, SHAPE_AWS_CREDENTIALS);
        assert!(s.at_boundary());
    }
}

fn dechunk(resp: &str) -> String {
    let mut rest = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let mut body = String::new();
    loop {
        let line_end = rest.find("\r\n").unwrap();
        let size_str = rest[..line_end].split(';').next().unwrap();
        let size = usize::from_str_radix(size_str, 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[test]
fn tokens_certificates_and_custom_keys() {
    let token = "HTTP/1.1 200 OK\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 10\r\n\r\nAQAEtoken=";
    let (out, mut s) = run(SHAPE_AWS_IMDS_TOKEN, token);
    assert!(out.ends_with(&format!("\r\n\r\n{}", stars(10))), "{out}");
    assert_eq!(s.take_report(), (SHAPE_AWS_IMDS_TOKEN, 1));
    assert_eq!(run(SHAPE_AWS_CREDENTIALS, token).0, token);

    let gce = r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#;
    let (out, _) = run(SHAPE_GCP_TOKEN, &response(gce));
    assert!(out.ends_with(r#"{"access_token":"******","expires_in":3599,"token_type":"Bearer"}"#));

    let xml = "<?xml version=\"1.0\"?><CertificateFile><Format>Pkcs7BlobWithPfxContents</Format><Data>MIIBase64==</Data></CertificateFile>";
    let (out, mut s) = run(SHAPE_AZURE_CERTIFICATES, &response(xml));
    assert!(
        out.contains("<Data>***********</Data>") && out.contains("<Format>Pkcs7"),
        "{out}"
    );
    assert_eq!(s.take_report().0, SHAPE_AZURE_CERTIFICATES);

    let custom = r#"{"client_id":"a","Client_Secret" :  "hunter2"}"#;
    let (out, mut s) = run(1 << SHAPE_CUSTOM_FIRST, &response(custom));
    assert!(out.ends_with(r#""Client_Secret" :  "*******"}"#), "{out}");
    assert_eq!(s.take_report().0, 1 << SHAPE_CUSTOM_FIRST);
}

#[test]
fn escaped_keys_count_as_secret_keys_and_non_string_values_pass() {
    let body = r#"{"Access\u004beyId":"x1","Token":null,"a":"Token","b":"v"}"#;
    let (out, _) = run(SHAPE_AWS_CREDENTIALS, &response(body));
    assert!(
        out.ends_with(r#"{"Access\u004beyId":"**","Token":null,"a":"Token","b":"v"}"#),
        "{out}"
    );
}

/// Keys match whatever their letters' case; a byte's bit-5 twin outside
/// the letters (DEL for `_`) also matches, which only masks more; other
/// bytes do not.
#[test]
fn keys_match_in_any_case_and_twins_only_mask_more() {
    let body = "{\"ACCESS_TOKEN\":\"a1\",\"access\u{7f}token\":\"b2\",\"accessXtoken\":\"c3\"}";
    let (out, _) = run(SHAPE_GCP_TOKEN, &response(body));
    assert!(
        out.ends_with(
            "{\"ACCESS_TOKEN\":\"**\",\"access\u{7f}token\":\"**\",\"accessXtoken\":\"c3\"}"
        ),
        "{out}"
    );
}

#[test]
fn keep_alive_interim_and_bodiless_responses() {
    let two = format!(
        "HTTP/1.1 100 Continue\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n{}",
        response(CREDS),
        response(r#"{"Token":"abc"}"#)
    );
    let (out, mut s) = run(SHAPE_AWS_CREDENTIALS, &two);
    assert!(out.ends_with(r#"{"Token":"***"}"#) && !out.contains("TOKENVALUE"));
    assert!(s.at_boundary());
    assert_eq!(s.take_report(), (SHAPE_AWS_CREDENTIALS, 4));
    // Until-close bodies.
    let (out, _) = run(
        SHAPE_AWS_CREDENTIALS,
        &format!("HTTP/1.0 200 OK\r\n\r\n{CREDS}"),
    );
    assert!(!out.contains("TOKENVALUE"));
}

#[test]
fn what_it_cannot_follow_cuts_the_stream() {
    let long = format!(
        "HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n{}",
        "a".repeat(9000),
        CREDS
    );
    let cases = [
        format!("HTTP/2 200\r\n\r\n{CREDS}"),
        format!("SSH-2.0\r\n\r\n{CREDS}"),
        format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{CREDS}"),
        format!("HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n{CREDS}"),
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{CREDS}"),
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{CREDS}"),
        format!("HTTP/1.1 101 Switching\r\n\r\n{CREDS}"),
        format!("HTTP/1.1 200 OK\r\n folded: x\r\n\r\n{CREDS}"),
        long,
    ];
    for c in cases {
        let (out, mut s) = run(SHAPE_AWS_CREDENTIALS, &c);
        assert!(s.is_cut(), "{c:.60}");
        assert!(out.ends_with(&stars(CREDS.len())), "{c:.60}");
        assert_ne!(s.take_report().0 & SHAPE_CUT, 0);
    }
    // Repeated identical Content-Length is fine.
    let ok = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {0}\r\ncontent-length: {0}\r\n\r\n{CREDS}",
        CREDS.len()
    );
    assert!(!run(SHAPE_AWS_CREDENTIALS, &ok).1.is_cut());
}

#[test]
fn table_limits_and_names() {
    assert_eq!(RedactTable::new(&[b"a\"b"]), Err(TableError::BadByte));
    assert_eq!(RedactTable::new(&[b""]), Err(TableError::Empty));
    let many: Vec<&[u8]> = (0..8).map(|_| &b"k"[..]).collect();
    assert_eq!(RedactTable::new(&many), Err(TableError::TooMany));
    let names: Vec<&str> = shape_names(
        SHAPE_AWS_CREDENTIALS | (2 << SHAPE_CUSTOM_FIRST) | SHAPE_CUT,
        &["a", "b"],
    )
    .collect();
    assert_eq!(names, ["aws-credentials", "b", "cut"]);
}

/// `run` between `step`s gives exactly what stepping every byte gives, on
/// the responses above and on pseudo-random mixtures of their pieces.
#[test]
fn runs_match_steps() {
    let t = table();
    let mut inputs: Vec<Vec<u8>> = vec![
        response(CREDS).into_bytes(),
        chunked(CREDS, 7).into_bytes(),
        chunked(CREDS, 1).into_bytes(),
        "HTTP/1.1 200 OK\r\nX-aws-ec2-metadata-token-ttl-seconds: 1\r\nContent-Length: 70\r\n\r\nAQAE0123456789012345678901234567890123456789012345678901234567890123456".into(),
        response("<x><Data>abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz</Data></x>").into_bytes(),
        format!("HTTP/1.0 200 OK\r\nX-Long: {}\r\n\r\n{CREDS}", "v".repeat(8300)).into_bytes(),
        format!("HTTP/1.1 200 OK\r\n{}: x\r\n\r\n{CREDS}", "N".repeat(8300)).into_bytes(),
    ];
    let pieces: Vec<Vec<u8>> = inputs
        .iter()
        .flat_map(|i| i.chunks(23).map(|c| c.to_vec()).collect::<Vec<_>>())
        .collect();
    let mut seed = 0x9e3779b9u32;
    for _ in 0..300 {
        let mut v = Vec::new();
        for _ in 0..8 {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            v.extend_from_slice(&pieces[(seed >> 8) as usize % pieces.len()]);
        }
        inputs.push(v);
    }
    for input in inputs {
        for mask in [SHAPES_ALL, SHAPE_AWS_CREDENTIALS, 0] {
            let (mut a, mut b) = (input.clone(), input.clone());
            let (mut sa, mut sb) = (Scanner::new(mask), Scanner::new(mask));
            sa.redact(&mut a, &t);
            sb.redact_fast(&mut b, &t);
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&input));
            assert_eq!(sa, sb);
        }
    }
}

/// A `HEAD` answer announces a body that never comes: the next answer's
/// head is recognised where the body would start, and read as a head (its
/// token header counts).
#[test]
fn head_answers_are_bodiless() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n";
    let token = "HTTP/1.1 200 OK\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 8\r\n\r\nAQAEtokn";
    let input = format!("{head}{token}{}", response(CREDS));
    let (out, mut s) = run(SHAPE_AWS_IMDS_TOKEN | SHAPE_AWS_CREDENTIALS, &input);
    assert!(out.contains("\r\n\r\n********HTTP/1.1 200 OK"), "{out}");
    assert!(!out.contains("TOKENVALUE") && !s.is_cut() && s.at_boundary());
    assert_eq!(
        s.take_report().0,
        SHAPE_AWS_IMDS_TOKEN | SHAPE_AWS_CREDENTIALS
    );
    for n in [1, 3, 7, 64] {
        assert_eq!(
            run_split(SHAPE_AWS_IMDS_TOKEN | SHAPE_AWS_CREDENTIALS, &input, n),
            out
        );
    }
    // A body that starts like a status line but is not one stays a body.
    let (out, s) = run(
        SHAPE_AWS_CREDENTIALS,
        &response("HTTP/x {\"Token\":\"ab\"}"),
    );
    assert!(
        out.ends_with("HTTP/x {\"Token\":\"**\"}") && s.at_boundary(),
        "{out}"
    );
}

/// The kernel builds a connection's scanner from zeroed memory.
#[test]
fn a_zeroed_scanner_initialised_is_a_new_one() {
    for mask in [0, SHAPE_AWS_CREDENTIALS, SHAPES_ALL] {
        let mut s: Scanner = unsafe { core::mem::zeroed() };
        s.init_zeroed(mask);
        assert_eq!(s, Scanner::new(mask));
    }
}
