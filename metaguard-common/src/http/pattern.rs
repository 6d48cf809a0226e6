//! Policy patterns, canonicalised by the request parser itself so that a
//! pattern and the requests it names always agree.
use super::{
    parser::{HttpParser, Step},
    reject::Reject,
    table::HeaderTable,
    TARGET_CAP,
};

/// Canonical form of a pattern path (origin-form, optional `?query`): the
/// bytes, their length, and whether it was a `/*` wildcard (then the bytes
/// are the prefix, ending in `/`).
pub fn canonical_pattern(path: &[u8]) -> Result<([u8; TARGET_CAP], usize, bool), Reject> {
    if !path.starts_with(b"/") || path.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        return Err(Reject::BadTarget);
    }
    let (path, wildcard) = match path.strip_suffix(b"*") {
        Some(p) if p.ends_with(b"/") => (p, true),
        _ => (path, false),
    };
    let parser = parse_target(path)?;
    if wildcard && parser.has_query() {
        return Err(Reject::BadTarget);
    }
    let mut out = [0; TARGET_CAP];
    let target = parser.target();
    out[..target.len()].copy_from_slice(target);
    Ok((out, target.len(), wildcard))
}

/// `GET <path> HTTP/1.1` with no fields, through the request parser.
fn parse_target(path: &[u8]) -> Result<HttpParser, Reject> {
    let table = HeaderTable::EMPTY;
    let mut parser = HttpParser::new();
    let bytes = b"GET ".iter().chain(path).chain(b" HTTP/1.1\r\n\r\n");
    for &b in bytes {
        match parser.feed(b, &table) {
            Step::Reject(r) => return Err(r),
            Step::Complete => return Ok(parser),
            Step::Continue | Step::RequestLine => {}
        }
    }
    Err(Reject::BadState)
}
