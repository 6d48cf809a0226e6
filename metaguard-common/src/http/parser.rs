//! The parser state and its byte-at-a-time driver: request line dispatch and
//! accessors. Target canonicalisation is in `canon`, header fields in `headers`.
use super::{
    chars::{is_authority_char, is_tchar},
    reject::Reject,
    table::HeaderTable,
    MAX_HEADER_BLOCK, MAX_METHOD,
};

/// What one byte did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The request line ended; method and canonical target are final.
    RequestLine,
    /// The header block ended; every accessor is final. Sticky until reset.
    Complete,
    /// Sticky until reset.
    Reject(Reject),
}

// Phases. 0 must be the start of a request (all-zero state = fresh parser).
pub(super) const P_METHOD: u8 = 0;
pub(super) const P_TARGET_START: u8 = 1;
pub(super) const P_SCHEME: u8 = 2;
pub(super) const P_AUTHORITY: u8 = 3;
pub(super) const P_PATH: u8 = 4;
pub(super) const P_QUERY: u8 = 5;
pub(super) const P_ASTERISK: u8 = 6;
pub(super) const P_VERSION: u8 = 7;
pub(super) const P_LINE_LF: u8 = 8;
pub(super) const P_FIELD_START: u8 = 9;
pub(super) const P_FIELD_NAME: u8 = 10;
pub(super) const P_FIELD_VALUE: u8 = 11;
pub(super) const P_FIELD_LF: u8 = 12;
pub(super) const P_BLOCK_LF: u8 = 13;
pub(super) const P_COMPLETE: u8 = 14;
pub(super) const P_REJECTED: u8 = 15;

// `flags` bits.
pub(super) const F_ABSOLUTE: u8 = 1;
pub(super) const F_QUERY: u8 = 2;
pub(super) const F_ASTERISK: u8 = 4;
/// A Content-Length field was seen.
pub(super) const F_CONTENT_LENGTH: u8 = 8;
/// The current field is Content-Length.
pub(super) const F_IN_CONTENT_LENGTH: u8 = 16;

/// Parser state. Plain integers only (no `bool`, no enums) so that any bytes
/// read from a map are a valid value; all-zero is a fresh parser.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpParser {
    pub(super) phase: u8,
    /// `Reject` number once `phase == P_REJECTED`.
    pub(super) reject: u8,
    pub(super) flags: u8,
    pub(super) method_len: u8,
    /// Per-phase sub-state: index into a literal (scheme, version), escape
    /// progress (path, query), Content-Length progress (field value).
    pub(super) sub: u8,
    /// High nibble of a pending `%XX`.
    pub(super) pct_hi: u8,
    /// Current path segment so far: 0 empty, 1 ".", 2 "..", 3 anything else.
    pub(super) dots: u8,
    /// Entries of `segs` in use; the top one starts the current segment.
    pub(super) depth: u8,
    pub(super) target_len: u16,
    /// Canonical path length (the target without `?query`).
    pub(super) path_len: u16,
    pub(super) block_len: u16,
    pub(super) name_len: u16,
    /// Header-table entries seen as field names.
    pub(super) seen: u16,
    /// Header-table entries the current field name still matches.
    pub(super) name_mask: u16,
    /// Built-in names the current field name still matches (`headers`).
    pub(super) builtin_mask: u8,
    pub(super) cl_digits: u8,
    pub(super) _pad: [u8; 2],
    pub(super) content_length: u32,
    pub(super) method: [u8; MAX_METHOD],
    /// Offset just after each `/` kept in the canonical path.
    pub(super) segs: [u16; super::MAX_DEPTH],
    pub(super) target: [u8; super::TARGET_CAP],
}

// The sum of the fields: no implicit padding.
const _: () = assert!(core::mem::size_of::<HttpParser>() == 364);
const _: () = assert!(core::mem::size_of::<HttpParser>() <= 1536);

impl Default for HttpParser {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpParser {
    pub const fn new() -> HttpParser {
        HttpParser {
            phase: P_METHOD,
            reject: 0,
            flags: 0,
            method_len: 0,
            sub: 0,
            pct_hi: 0,
            dots: 0,
            depth: 0,
            target_len: 0,
            path_len: 0,
            block_len: 0,
            name_len: 0,
            seen: 0,
            name_mask: 0,
            builtin_mask: 0,
            cl_digits: 0,
            _pad: [0; 2],
            content_length: 0,
            method: [0; MAX_METHOD],
            segs: [0; super::MAX_DEPTH],
            target: [0; super::TARGET_CAP],
        }
    }

    /// Ready for the next request (pipelining: after Complete and the body).
    #[inline(always)]
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Consumes one byte. O(1): at most one 16-entry loop over `table`.
    pub fn feed(&mut self, byte: u8, table: &HeaderTable) -> Step {
        match self.phase {
            P_REJECTED => return Step::Reject(Reject::from_u8(self.reject)),
            P_COMPLETE => return Step::Complete,
            _ => {}
        }
        if self.block_len >= MAX_HEADER_BLOCK {
            return self.fail(Reject::HeaderBlockTooLarge);
        }
        self.block_len += 1;
        match self.dispatch(byte, table) {
            Ok(step) => step,
            Err(reason) => self.fail(reason),
        }
    }

    #[inline(always)]
    fn fail(&mut self, reason: Reject) -> Step {
        self.phase = P_REJECTED;
        self.reject = reason as u8;
        Step::Reject(reason)
    }

    fn dispatch(&mut self, b: u8, table: &HeaderTable) -> Result<Step, Reject> {
        let expects_lf = matches!(self.phase, P_LINE_LF | P_FIELD_LF | P_BLOCK_LF);
        if b == b'\n' && !expects_lf {
            return Err(Reject::BareLf);
        }
        if b >= 0x80 && self.ascii_only() {
            return Err(Reject::NonAscii);
        }
        match self.phase {
            P_METHOD => self.on_method(b),
            P_TARGET_START => self.on_target_start(b),
            P_SCHEME => self.on_scheme(b),
            P_AUTHORITY => self.on_authority(b),
            P_PATH => self.on_path(b),
            P_QUERY => self.on_query(b),
            P_ASTERISK => self.on_asterisk(b),
            P_VERSION => self.on_version(b),
            P_LINE_LF => self.on_lf(b, P_FIELD_START, Step::RequestLine),
            P_FIELD_START => self.on_field_start(b, table),
            P_FIELD_NAME => self.on_field_name(b, table),
            P_FIELD_VALUE => self.on_field_value(b),
            P_FIELD_LF => self.on_lf(b, P_FIELD_START, Step::Continue),
            P_BLOCK_LF => self.on_lf(b, P_COMPLETE, Step::Complete),
            _ => Err(Reject::BadState),
        }
    }

    /// Request line and field names are ASCII; field values may carry obs-text.
    #[inline(always)]
    fn ascii_only(&self) -> bool {
        self.phase <= P_VERSION || self.phase == P_FIELD_START || self.phase == P_FIELD_NAME
    }

    fn on_method(&mut self, b: u8) -> Result<Step, Reject> {
        if b == b' ' && self.method_len != 0 {
            self.phase = P_TARGET_START;
            return Ok(Step::Continue);
        }
        if !is_tchar(b) || self.method_len as usize >= MAX_METHOD {
            return Err(Reject::BadMethod);
        }
        self.method[(self.method_len as usize) & (MAX_METHOD - 1)] = b;
        self.method_len += 1;
        Ok(Step::Continue)
    }

    fn on_target_start(&mut self, b: u8) -> Result<Step, Reject> {
        match b {
            b'/' => {
                self.start_path()?;
                self.phase = P_PATH;
                Ok(Step::Continue)
            }
            b'*' => {
                // Rejected once the version is read, so HTTP/2's
                // `PRI * HTTP/2.0` reports bad-version.
                self.flags |= F_ASTERISK;
                self.phase = P_ASTERISK;
                Ok(Step::Continue)
            }
            _ => {
                self.phase = P_SCHEME;
                self.sub = 0;
                self.on_scheme(b)
            }
        }
    }

    /// Absolute-form: `http://`, scheme in any case.
    fn on_scheme(&mut self, b: u8) -> Result<Step, Reject> {
        const SCHEME: &[u8] = b"http://";
        let i = self.sub as usize;
        let want = SCHEME.get(i).copied().ok_or(Reject::BadState)?;
        let got = if i < 4 { b.to_ascii_lowercase() } else { b };
        if got != want {
            return Err(target_byte_reject(b));
        }
        self.sub += 1;
        if self.sub as usize == SCHEME.len() {
            self.flags |= F_ABSOLUTE;
            self.phase = P_AUTHORITY;
            self.sub = 0;
        }
        Ok(Step::Continue)
    }

    /// Authority bytes are checked and dropped; `sub` = 1 once non-empty.
    fn on_authority(&mut self, b: u8) -> Result<Step, Reject> {
        if is_authority_char(b) {
            self.sub = 1;
            return Ok(Step::Continue);
        }
        if !matches!(b, b'/' | b'?' | b' ') {
            return Err(target_byte_reject(b));
        }
        if self.sub == 0 {
            return Err(Reject::BadTarget);
        }
        self.start_path()?;
        self.phase = P_PATH;
        if b == b'/' {
            return Ok(Step::Continue);
        }
        // An empty path is "/": the `?` or SP ends it.
        self.on_path(b)
    }

    fn on_asterisk(&mut self, b: u8) -> Result<Step, Reject> {
        if b != b' ' {
            return Err(Reject::AsteriskForm);
        }
        self.start_version();
        Ok(Step::Continue)
    }

    #[inline(always)]
    pub(super) fn start_version(&mut self) {
        self.phase = P_VERSION;
        self.sub = 0;
    }

    /// `HTTP/1.1` or `HTTP/1.0`, then CR.
    fn on_version(&mut self, b: u8) -> Result<Step, Reject> {
        const VERSION: &[u8] = b"HTTP/1.";
        let i = self.sub as usize;
        let ok = match VERSION.get(i) {
            Some(&want) => b == want,
            None if i == VERSION.len() => b == b'0' || b == b'1',
            None => b == b'\r',
        };
        if !ok {
            return Err(Reject::BadVersion);
        }
        if b != b'\r' {
            self.sub += 1;
            return Ok(Step::Continue);
        }
        if self.flags & F_ASTERISK != 0 {
            return Err(Reject::AsteriskForm);
        }
        self.phase = P_LINE_LF;
        Ok(Step::Continue)
    }

    #[inline(always)]
    fn on_lf(&mut self, b: u8, next: u8, step: Step) -> Result<Step, Reject> {
        if b != b'\n' {
            return Err(Reject::BareCr);
        }
        self.phase = next;
        Ok(step)
    }
}

/// The reason for a byte that may not appear where a target byte is due.
#[inline(always)]
pub(super) fn target_byte_reject(b: u8) -> Reject {
    match b {
        0 => Reject::Nul,
        b'\\' => Reject::Backslash,
        b'#' => Reject::Fragment,
        // The line ended without a version: HTTP/0.9.
        b'\r' => Reject::BadVersion,
        0x80..=0xff => Reject::NonAscii,
        _ => Reject::BadTarget,
    }
}

/// Results, final once `feed` returned `Complete` (method and target are
/// final from `RequestLine` on).
impl HttpParser {
    pub fn is_complete(&self) -> bool {
        self.phase == P_COMPLETE
    }

    /// The request line was read and accepted.
    pub fn request_line_done(&self) -> bool {
        self.phase >= P_FIELD_START && self.phase <= P_COMPLETE
    }

    pub fn rejected(&self) -> Option<Reject> {
        (self.phase == P_REJECTED).then(|| Reject::from_u8(self.reject))
    }

    /// As sent: methods are case-sensitive.
    pub fn method(&self) -> &[u8] {
        self.method.get(..self.method_len as usize).unwrap_or(&[])
    }

    /// Canonical path, then `?query` when one was sent.
    pub fn target(&self) -> &[u8] {
        self.target.get(..self.target_len as usize).unwrap_or(&[])
    }

    /// Canonical path without the query.
    pub fn path(&self) -> &[u8] {
        self.target.get(..self.path_len as usize).unwrap_or(&[])
    }

    pub fn has_query(&self) -> bool {
        self.flags & F_QUERY != 0
    }

    pub fn is_absolute_form(&self) -> bool {
        self.flags & F_ABSOLUTE != 0
    }

    /// 0 when no Content-Length field was sent.
    pub fn content_length(&self) -> u32 {
        self.content_length
    }

    pub fn has_content_length(&self) -> bool {
        self.flags & F_CONTENT_LENGTH != 0
    }

    /// Bytes consumed so far: request line and header block, CRLFs included.
    pub fn header_block_len(&self) -> u16 {
        self.block_len
    }

    /// Bit `i` set when entry `i` of the header table was a field name.
    pub fn headers_seen(&self) -> u16 {
        self.seen
    }
}
