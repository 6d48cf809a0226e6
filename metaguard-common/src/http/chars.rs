//! Byte classes of RFC 9110 and RFC 3986, as `match`es (no tables to index).

/// `tchar`: method and header-name bytes.
#[inline(always)]
pub(super) fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
    ) || b.is_ascii_alphanumeric()
}

#[inline(always)]
pub(super) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `pchar` without `%` (escapes are decoded separately).
#[inline(always)]
pub(super) fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[inline(always)]
pub(super) fn is_query_char(b: u8) -> bool {
    is_pchar(b) || b == b'/' || b == b'?'
}

/// Host and port bytes: reg-name without sub-delims, IP literals, `:port`.
/// No userinfo (`@`) and no escapes: nothing there is worth the ambiguity.
#[inline(always)]
pub(super) fn is_authority_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b':' | b'[' | b']')
}

/// Field-value bytes: VCHAR, SP, HTAB and obs-text.
#[inline(always)]
pub(super) fn is_value_char(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

#[inline(always)]
pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[inline(always)]
pub(super) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[inline(always)]
pub(super) fn hex_digit(nibble: u8) -> u8 {
    // Arithmetic, not a table: LLVM drops the `& 15` of a table index when it
    // can prove it redundant, and the BPF verifier, which cannot, then
    // refuses the read (seen in the sk_msg prototype).
    let n = nibble & 15;
    if n < 10 {
        b'0' + n
    } else {
        b'A' + (n - 10)
    }
}
