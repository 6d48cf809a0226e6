//! Host-only reference matcher: does what the kernel will do (build keys from
//! the parser, look them up) against a `HashSet` standing in for the map.
extern crate std;
use std::collections::HashSet;

use super::{canonical_pattern, HttpKey, HttpParser};

/// Whether the parsed request (its request line accepted) matches one of
/// `(method, pattern)`; patterns that do not canonicalise are skipped.
pub fn matches(parser: &HttpParser, patterns: &[(&[u8], &[u8])]) -> bool {
    if !parser.request_line_done() {
        return false;
    }
    let set = pattern_keys(patterns);
    let mut key = HttpKey::ZERO;
    parser.fill_exact(0, &mut key);
    if set.contains(&key) {
        return true;
    }
    (0..parser.boundary_count()).any(|i| parser.fill_prefix(0, i, &mut key) && set.contains(&key))
}

fn pattern_keys(patterns: &[(&[u8], &[u8])]) -> HashSet<HttpKey> {
    let mut set = HashSet::new();
    for &(method, pattern) in patterns {
        let Ok((buf, len, wildcard)) = canonical_pattern(pattern) else {
            continue;
        };
        let target = &buf[..len];
        let key = if wildcard {
            HttpKey::prefix(0, method, target)
        } else {
            HttpKey::exact(0, method, target)
        };
        if let Ok(key) = key {
            set.insert(key);
        }
    }
    set
}
