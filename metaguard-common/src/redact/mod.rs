//! Secret redaction in HTTP/1.x responses from metadata services.
//!
//! [`Scanner`] reads a connection's response stream one byte at a time and
//! says, for each byte, whether it is part of a secret value; the caller
//! overwrites those bytes with [`FILLER`]. Nothing is buffered or moved:
//! lengths, `Content-Length` and chunk framing stay valid, and because a
//! secret's key (or the header that marks a token body) always comes before
//! its value, a value split over any number of segments is masked from its
//! first byte. The same code runs in the kernel (`sk_skb` verdict program,
//! state in a map value) and on the host (tests, fuzzing).
//!
//! What it follows:
//! - the status line and header block (at most [`MAX_HEAD`] bytes),
//!   `Content-Length`, `Transfer-Encoding: chunked` (chunk-size lines are
//!   framing, never masked), bodies up to the connection's close, 1xx
//!   interim responses, 204/304 without a body;
//! - in bodies: JSON string values of keys named by the shapes in force
//!   (keys compared ASCII-case-insensitively; a key written with escapes
//!   counts as every key), the contents of XML `<Data>` elements, and whole
//!   bodies of IMDSv2 token answers (those carrying the
//!   `X-aws-ec2-metadata-token-ttl-seconds` header).
//!
//! Deny by default: anything it cannot follow (not HTTP/1.x, a header block
//! over the bound, a malformed or conflicting `Content-Length`, a transfer
//! coding other than `chunked`, bad chunk sizes, a protocol switch) *cuts*
//! the stream: from there on every byte is masked ([`SHAPE_CUT`]).
#[cfg(test)]
mod tests;

/// What secret bytes become.
pub const FILLER: u8 = b'*';

/// Longest status line plus header block followed.
pub const MAX_HEAD: u32 = 8192;

/// Block size of [`Scanner::run`] (a power of two).
pub const RUN: usize = 128;

/// AWS role credentials: JSON `AccessKeyId`, `SecretAccessKey`, `Token`.
pub const SHAPE_AWS_CREDENTIALS: u32 = 1 << 0;
/// IMDSv2 session tokens (bodies of `PUT /latest/api/token` answers).
pub const SHAPE_AWS_IMDS_TOKEN: u32 = 1 << 1;
/// GCE service-account OAuth tokens: JSON `access_token`.
pub const SHAPE_GCP_TOKEN: u32 = 1 << 2;
/// Azure managed-identity OAuth tokens: JSON `access_token`.
pub const SHAPE_AZURE_TOKEN: u32 = 1 << 3;
/// Azure WireServer certificate payloads: XML `<Data>` contents.
pub const SHAPE_AZURE_CERTIFICATES: u32 = 1 << 4;
/// First bit of the policy's custom keys (one bit each).
pub const SHAPE_CUSTOM_FIRST: u32 = 8;
/// Custom JSON keys a policy may name in all (shape bits 8..=14: events
/// carry the shapes in 16 bits).
pub const MAX_CUSTOM: usize = 7;
/// Longest custom key.
pub const MAX_CUSTOM_LEN: usize = 64;
/// Reported when the stream was cut (everything after masked).
pub const SHAPE_CUT: u32 = 1 << 15;
/// Every shape a stream can be asked to redact.
pub const SHAPES_ALL: u32 = 0x1f | (((1 << MAX_CUSTOM) - 1) << SHAPE_CUSTOM_FIRST);

/// Built-in shapes by policy name.
pub const BUILTIN_SHAPES: &[(&str, u32)] = &[
    ("aws-credentials", SHAPE_AWS_CREDENTIALS),
    ("aws-imds-token", SHAPE_AWS_IMDS_TOKEN),
    ("gcp-access-token", SHAPE_GCP_TOKEN),
    ("azure-access-token", SHAPE_AZURE_TOKEN),
    ("azure-wireserver-certificates", SHAPE_AZURE_CERTIFICATES),
];

/// Entries of [`RedactTable`].
pub const MAX_KEYS: usize = 16;

/// One JSON key whose string values are secret.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedactKey {
    /// [`hash_key`] of the key.
    pub hash: u32,
    pub len: u32,
    /// Shapes this key belongs to.
    pub shapes: u32,
}

/// The JSON keys of the built-in and custom shapes (a map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedactTable {
    pub keys: [RedactKey; MAX_KEYS],
    /// Union of the shapes named by keys (those an escaped key stands for).
    pub key_shapes: u32,
    /// Entries in use (the first `count` of `keys`).
    pub count: u32,
    /// Bit `hash % 64` of every key: most strings in an answer (values,
    /// other keys) miss it and skip the table walk.
    pub bloom: u64,
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// One step of the key hash (FNV-1a over ASCII-lowercased bytes).
#[inline(always)]
pub const fn fold(h: u32, b: u8) -> u32 {
    (h ^ b.to_ascii_lowercase() as u32).wrapping_mul(FNV_PRIME)
}

/// [`fold`] over a whole name.
pub const fn hash(s: &[u8]) -> u32 {
    fold_all(s, false)
}

/// `s` folded with [`fold_key`] (`key`) or [`fold`].
const fn fold_all(s: &[u8], key: bool) -> u32 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < s.len() {
        h = if key {
            fold_key(h, s[i])
        } else {
            fold(h, s[i])
        };
        i += 1;
    }
    h
}

/// One step of the JSON key hash: FNV-1a over bytes with bit 5 set, which
/// lowercases ASCII letters in one instruction (every body string is
/// hashed, a byte at a time). Other bytes that differ only in bit 5 (`_`
/// and DEL, `[` and `{`, a control byte and its printable twin) hash alike
/// too: a key spelled with them counts as the key, which can only mask
/// more. Header names keep the exact [`fold`]: they steer the framing.
#[inline(always)]
pub const fn fold_key(h: u32, b: u8) -> u32 {
    (h ^ (b | 0x20) as u32).wrapping_mul(FNV_PRIME)
}

/// [`fold_key`] over a whole key.
pub const fn hash_key(s: &[u8]) -> u32 {
    fold_all(s, true)
}

const H_CONTENT_LENGTH: (u32, u32) = (hash(b"content-length"), 14);
const H_TRANSFER_ENCODING: (u32, u32) = (hash(b"transfer-encoding"), 17);
const H_TOKEN_TTL: (u32, u32) = (hash(b"x-aws-ec2-metadata-token-ttl-seconds"), 36);
const H_CHUNKED: (u32, u32) = (hash(b"chunked"), 7);
const DATA_TAG: [u8; 6] = *b"<Data>";

/// A key hash's bit in [`RedactTable::bloom`].
#[inline(always)]
const fn bloom_bit(h: u32) -> u64 {
    1 << (h % 64)
}

/// Why a custom key is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    TooMany,
    Empty,
    TooLong,
    /// Quotes, backslashes and control bytes cannot be part of a key.
    BadByte,
}

impl RedactTable {
    /// The built-in keys and `custom` JSON keys (custom key `i` is shape bit
    /// `SHAPE_CUSTOM_FIRST + i`).
    pub fn new(custom: &[&[u8]]) -> Result<RedactTable, TableError> {
        let mut t = RedactTable::default();
        let builtin: [(&[u8], u32); 4] = [
            (b"AccessKeyId", SHAPE_AWS_CREDENTIALS),
            (b"SecretAccessKey", SHAPE_AWS_CREDENTIALS),
            (b"Token", SHAPE_AWS_CREDENTIALS),
            (b"access_token", SHAPE_GCP_TOKEN | SHAPE_AZURE_TOKEN),
        ];
        if custom.len() > MAX_CUSTOM {
            return Err(TableError::TooMany);
        }
        let mut n = 0;
        for (k, s) in builtin {
            t.push(n, k, s);
            n += 1;
        }
        for (i, k) in custom.iter().enumerate() {
            if k.is_empty() {
                return Err(TableError::Empty);
            }
            if k.len() > MAX_CUSTOM_LEN {
                return Err(TableError::TooLong);
            }
            if k.iter()
                .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
            {
                return Err(TableError::BadByte);
            }
            t.push(n, k, 1 << (SHAPE_CUSTOM_FIRST + i as u32));
            n += 1;
        }
        Ok(t)
    }

    fn push(&mut self, n: usize, key: &[u8], shapes: u32) {
        let h = hash_key(key);
        self.keys[n] = RedactKey {
            hash: h,
            len: key.len() as u32,
            shapes,
        };
        self.key_shapes |= shapes;
        self.bloom |= bloom_bit(h);
        self.count = n as u32 + 1;
    }

    /// Whether some key may hash to `h` (false: none does).
    #[inline(always)]
    pub fn may_be_key(&self, h: u32) -> bool {
        self.bloom & bloom_bit(h) != 0
    }

    /// Shapes of the key that hashes to `h` with length `len`.
    #[inline(always)]
    pub fn lookup(&self, h: u32, len: u32) -> u32 {
        if !self.may_be_key(h) {
            return 0;
        }
        let mut m = 0;
        let mut i = 0;
        while i < MAX_KEYS && (i as u32) < self.count {
            let k = &self.keys[i];
            if k.len == len && k.hash == h {
                m |= k.shapes;
            }
            i += 1;
        }
        m
    }
}

// Stream phases.
const P_STATUS: u8 = 0;
const P_STATUS_VERSION: u8 = 1;
const P_STATUS_CODE: u8 = 2;
const P_STATUS_REST: u8 = 3;
const P_LINE_START: u8 = 4;
const P_NAME: u8 = 5;
const P_VALUE: u8 = 6;
const P_BODY_LENGTH: u8 = 7;
const P_BODY_CLOSE: u8 = 8;
const P_CHUNK_SIZE: u8 = 9;
const P_CHUNK_EXT: u8 = 10;
const P_CHUNK_DATA: u8 = 11;
const P_CHUNK_END: u8 = 12;
const P_TRAILER_START: u8 = 13;
const P_TRAILER_LINE: u8 = 14;
const P_CUT: u8 = 15;

// Body content states.
const J_OUT: u8 = 0;
const J_STRING: u8 = 1;
const J_AFTER_KEY: u8 = 2;
const J_AFTER_COLON: u8 = 3;
const J_SECRET: u8 = 4;
const J_XML: u8 = 5;

// Header being read.
const HDR_OTHER: u8 = 0;
const HDR_CONTENT_LENGTH: u8 = 1;
const HDR_TRANSFER_ENCODING: u8 = 2;

// `flags`.
const F_ESCAPE: u8 = 1;
const F_ESCAPED_KEY: u8 = 2;
const F_TOKEN_HEADER: u8 = 4;
const F_TOKEN_BODY: u8 = 8;
const F_LENGTH: u8 = 16;
const F_CHUNKED: u8 = 32;
const F_DIGITS_DONE: u8 = 64;

/// Largest `Content-Length` or chunk size followed (beyond: cut).
const MAX_LENGTH: u64 = 1 << 40;

/// Per-connection scanner state (a map value in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scanner {
    /// Bytes left in the current `Content-Length` body or chunk.
    pub remaining: u64,
    /// `Content-Length` of the current head, or the chunk size being read.
    pub length: u64,
    /// Shapes to redact.
    pub mask: u32,
    /// Shapes redacted in the current response.
    pub found: u32,
    /// Shapes redacted in responses finished (or the cut) since the owner
    /// last took them ([`Scanner::take_report`]).
    pub report: u32,
    /// Values (or token bodies) masked since the last report.
    pub values: u32,
    /// Hash and length of the JSON string being read.
    pub hash: u32,
    pub slen: u32,
    /// Head bytes so far.
    pub head: u32,
    /// Shapes of the key whose value may follow.
    pub key_shapes: u32,
    pub status: u16,
    pub phase: u8,
    pub json: u8,
    pub flags: u8,
    pub header: u8,
    /// Position in "HTTP/1.", status digits, or in `<Data>`.
    pub pos: u8,
    pub xml: u8,
    /// Body bytes so far that spell "HTTP/1." (a `HEAD` answer's head
    /// announces a body that never comes: the next answer starts there);
    /// `PROBE_OFF` once the body is known to be one.
    pub probe: u8,
    pub _pad: [u8; 3],
    /// Where [`Scanner::opaque`] passes values through (0 between uses).
    pub scratch: u32,
}

const PROBE_OFF: u8 = 0xff;
const PROBE_LEN: u8 = 7;

/// `end` at most [`RUN`], in a way the eBPF verifier sees (an opaque copy,
/// so the compiler cannot drop the check as redundant): it bounds the
/// loops of [`Scanner::run`] by the block, not by what the state allows.
#[inline(always)]
fn clamp(end: usize) -> usize {
    let e = core::hint::black_box(end);
    if e > RUN {
        RUN
    } else {
        e
    }
}

/// A field of the state read from memory, where the kernel's copy lives in
/// a map value whose contents the eBPF verifier does not track: a loop that
/// changes phase would otherwise carry the value in a register, and the
/// verifier would walk every iteration once per value it can hold.
#[inline(always)]
fn fresh<T: Copy>(field: &T) -> T {
    // SAFETY: a plain read of a valid reference.
    unsafe { core::ptr::read_volatile(field) }
}

/// Index `j` of a block, masked where the compiler cannot drop the mask
/// (the verifier loses the loop bound across LLVM's loop rewrites).
#[inline(always)]
fn at(j: usize) -> usize {
    opaque_reg(j) & (RUN - 1)
}

/// `v` through an empty asm statement the compiler cannot see into (and
/// must assume reads and writes memory, like `black_box`), in one register
/// copy: `black_box` stores to the stack and loads back, for every byte.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn opaque_reg(mut v: usize) -> usize {
    // SAFETY: copies a register to itself.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v) };
    v
}

#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn opaque_reg(v: usize) -> usize {
    core::hint::black_box(v)
}

#[inline(always)]
fn http_prefix(pos: u8) -> u8 {
    match pos {
        0 => b'H',
        1 | 2 => b'T',
        3 => b'P',
        4 => b'/',
        5 => b'1',
        _ => b'.',
    }
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r' || b == b'\n'
}

#[inline(always)]
fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u64),
        b'a'..=b'f' => Some((b - b'a' + 10) as u64),
        b'A'..=b'F' => Some((b - b'A' + 10) as u64),
        _ => None,
    }
}

impl Scanner {
    /// A stream redacting `mask` (a union of `SHAPE_*` bits).
    pub const fn new(mask: u32) -> Scanner {
        Scanner {
            remaining: 0,
            length: 0,
            mask,
            found: 0,
            report: 0,
            values: 0,
            hash: 0,
            slen: 0,
            head: 0,
            key_shapes: 0,
            status: 0,
            phase: P_STATUS,
            json: J_OUT,
            flags: 0,
            header: HDR_OTHER,
            pos: 0,
            xml: 0,
            probe: PROBE_OFF,
            _pad: [0; 3],
            scratch: 0,
        }
    }

    /// Turns an all-zero scanner into [`Scanner::new`]`(mask)` by setting
    /// only the fields that start non-zero: the kernel zeroes its map
    /// values a word at a time, and a whole-struct store there becomes
    /// byte-at-a-time memset calls.
    pub fn init_zeroed(&mut self, mask: u32) {
        self.mask = mask;
        self.probe = PROBE_OFF;
    }

    /// `v`, passed through memory the eBPF verifier does not follow (the
    /// kernel's scanner lives in a map value): a loop entered with `v` is
    /// walked once, not once for each value the previous loop could leave.
    #[inline(always)]
    fn opaque(&mut self, v: usize) -> usize {
        self.scratch = v as u32;
        let v = fresh(&self.scratch) as usize;
        self.scratch = 0;
        v
    }

    /// The stream was cut: every further byte is masked.
    pub fn is_cut(&self) -> bool {
        self.phase == P_CUT
    }

    /// Between responses (nothing of one has been read).
    pub fn at_boundary(&self) -> bool {
        self.phase == P_STATUS && self.pos == 0
    }

    /// Cuts the stream (the owner's decision, e.g. state it cannot trust).
    #[inline(always)]
    pub fn cut(&mut self) {
        self.phase = P_CUT;
        self.report |= self.found | SHAPE_CUT;
        self.found = 0;
    }

    /// Shapes redacted since the last call, and how many values.
    #[inline(always)]
    pub fn take_report(&mut self) -> (u32, u32) {
        let r = (self.report, self.values);
        self.report = 0;
        self.values = 0;
        r
    }

    /// Reads one byte of the stream; true when it is secret (to be replaced
    /// with [`FILLER`]).
    #[inline(always)]
    pub fn step(&mut self, b: u8, table: &RedactTable) -> bool {
        match self.phase {
            P_STATUS => {
                if self.pos < 7 {
                    if b != http_prefix(self.pos) {
                        self.cut();
                        return true;
                    }
                    self.pos += 1;
                    if self.pos == 7 {
                        self.phase = P_STATUS_VERSION;
                    }
                }
                self.head_byte()
            }
            P_STATUS_VERSION => {
                if b == b' ' {
                    self.phase = P_STATUS_CODE;
                    self.pos = 0;
                    self.status = 0;
                } else if b == b'\n' {
                    self.cut();
                    return true;
                }
                self.head_byte()
            }
            P_STATUS_CODE => {
                if self.pos < 3 && b.is_ascii_digit() {
                    self.status = self.status * 10 + (b - b'0') as u16;
                    self.pos += 1;
                } else if self.pos == 3 && (b == b' ' || b == b'\r' || b == b'\n') {
                    self.phase = if b == b'\n' {
                        P_LINE_START
                    } else {
                        P_STATUS_REST
                    };
                } else {
                    self.cut();
                    return true;
                }
                self.head_byte()
            }
            P_STATUS_REST => {
                if b == b'\n' {
                    self.phase = P_LINE_START;
                }
                self.head_byte()
            }
            P_LINE_START => {
                if b == b'\r' {
                    return self.head_byte();
                }
                if b == b'\n' {
                    self.end_of_head();
                    return self.phase == P_CUT;
                }
                if b == b':' || is_ws(b) {
                    // Empty names and obs-fold continuation lines.
                    self.cut();
                    return true;
                }
                self.phase = P_NAME;
                self.hash = fold(FNV_OFFSET, b);
                self.slen = 1;
                self.head_byte()
            }
            P_NAME => {
                if b == b':' {
                    self.start_value();
                } else if b == b'\n' || b == b' ' || b == b'\t' {
                    self.cut();
                    return true;
                } else {
                    self.hash = fold(self.hash, b);
                    self.slen += 1;
                }
                self.head_byte()
            }
            P_VALUE => {
                if b == b'\n' {
                    self.end_value();
                    if self.phase == P_CUT {
                        return true;
                    }
                    self.phase = P_LINE_START;
                } else if b != b'\r' {
                    self.value_byte(b);
                    if self.phase == P_CUT {
                        return true;
                    }
                }
                self.head_byte()
            }
            P_BODY_LENGTH => {
                if self.probe < PROBE_LEN && self.head_answer(b) {
                    return false;
                }
                let m = self.body_byte(b, table);
                self.remaining -= 1;
                if self.remaining == 0 {
                    self.end_of_response();
                }
                m
            }
            P_BODY_CLOSE => {
                if self.probe < PROBE_LEN && self.head_answer(b) {
                    return false;
                }
                self.body_byte(b, table)
            }
            P_CHUNK_SIZE => {
                if let Some(d) = hex(b) {
                    if self.flags & F_DIGITS_DONE != 0 || self.pos >= 10 {
                        self.cut();
                        return true;
                    }
                    self.length = self.length * 16 + d;
                    self.pos += 1;
                } else if b == b'\n' {
                    self.end_chunk_size();
                } else if b == b';' {
                    self.phase = P_CHUNK_EXT;
                } else if b == b' ' || b == b'\t' {
                    self.flags |= F_DIGITS_DONE;
                } else if b != b'\r' {
                    self.cut();
                    return true;
                }
                self.phase == P_CUT
            }
            P_CHUNK_EXT => {
                if b == b'\n' {
                    self.end_chunk_size();
                }
                self.phase == P_CUT
            }
            P_CHUNK_DATA => {
                let m = self.body_byte(b, table);
                self.remaining -= 1;
                if self.remaining == 0 {
                    self.phase = P_CHUNK_END;
                }
                m
            }
            P_CHUNK_END => {
                if b == b'\n' {
                    self.phase = P_CHUNK_SIZE;
                    self.length = 0;
                    self.pos = 0;
                    self.flags &= !F_DIGITS_DONE;
                } else if b != b'\r' {
                    self.cut();
                    return true;
                }
                false
            }
            P_TRAILER_START => {
                if b == b'\n' {
                    self.end_of_response();
                } else if b != b'\r' {
                    self.phase = P_TRAILER_LINE;
                }
                self.head_byte()
            }
            P_TRAILER_LINE => {
                if b == b'\n' {
                    self.phase = P_TRAILER_START;
                }
                self.head_byte()
            }
            _ => {
                self.phase = P_CUT;
                true
            }
        }
    }

    /// Body byte `b` while the body may still be the next answer's status
    /// line: true when `b` completes "HTTP/1." there, which makes the
    /// previous answer bodiless (an answer to `HEAD`) and this one's head
    /// the current state. Nothing of the 7 bytes is secret either way.
    #[inline(always)]
    fn head_answer(&mut self, b: u8) -> bool {
        if b != http_prefix(self.probe) {
            self.probe = PROBE_OFF;
            return false;
        }
        self.probe += 1;
        if self.probe < PROBE_LEN {
            return false;
        }
        self.end_of_response();
        self.phase = P_STATUS_VERSION;
        self.pos = PROBE_LEN;
        self.head = PROBE_LEN as u32;
        true
    }

    /// Counts a head (or trailer) byte; past the bound the stream is cut.
    #[inline(always)]
    fn head_byte(&mut self) -> bool {
        self.head += 1;
        if self.head > MAX_HEAD {
            self.cut();
            return true;
        }
        false
    }

    #[inline(always)]
    fn start_value(&mut self) {
        let name = (self.hash, self.slen);
        self.header = HDR_OTHER;
        if name == H_CONTENT_LENGTH {
            // A second Content-Length must repeat the first: `remaining`
            // keeps the first until the value ends.
            self.header = HDR_CONTENT_LENGTH;
            self.remaining = self.length;
            self.length = 0;
            self.pos = 0;
            self.flags &= !F_DIGITS_DONE;
        } else if name == H_TRANSFER_ENCODING {
            if self.flags & F_CHUNKED != 0 {
                self.cut();
                return;
            }
            self.header = HDR_TRANSFER_ENCODING;
            self.hash = FNV_OFFSET;
            self.slen = 0;
        } else if name == H_TOKEN_TTL {
            self.flags |= F_TOKEN_HEADER;
        }
        self.phase = P_VALUE;
    }

    #[inline(always)]
    fn value_byte(&mut self, b: u8) {
        match self.header {
            HDR_CONTENT_LENGTH => {
                if b.is_ascii_digit() {
                    if self.flags & F_DIGITS_DONE != 0 || self.length >= MAX_LENGTH {
                        self.cut();
                        return;
                    }
                    self.length = self.length * 10 + (b - b'0') as u64;
                    self.pos = 1;
                } else if b == b' ' || b == b'\t' {
                    if self.pos != 0 {
                        self.flags |= F_DIGITS_DONE;
                    }
                } else {
                    self.cut();
                }
            }
            HDR_TRANSFER_ENCODING if b != b' ' && b != b'\t' => {
                self.hash = fold(self.hash, b);
                self.slen += 1;
            }
            _ => {}
        }
    }

    #[inline(always)]
    fn end_value(&mut self) {
        match self.header {
            HDR_CONTENT_LENGTH => {
                // `remaining` holds the earlier value, if any.
                if self.pos == 0 || (self.flags & F_LENGTH != 0 && self.remaining != self.length) {
                    self.cut();
                    return;
                }
                self.flags |= F_LENGTH;
                self.remaining = 0;
            }
            HDR_TRANSFER_ENCODING => {
                if (self.hash, self.slen) != H_CHUNKED {
                    self.cut();
                    return;
                }
                self.flags |= F_CHUNKED;
            }
            _ => {}
        }
        self.header = HDR_OTHER;
    }

    #[inline(always)]
    fn end_of_head(&mut self) {
        let status = self.status;
        if status == 101 || !(100..600).contains(&status) {
            self.cut();
            return;
        }
        if status < 200 {
            // Interim response: another head follows.
            self.reset_head();
            return;
        }
        self.json = J_OUT;
        self.xml = 0;
        self.key_shapes = 0;
        self.probe = 0;
        if self.flags & F_TOKEN_HEADER != 0 && self.mask & SHAPE_AWS_IMDS_TOKEN != 0 {
            self.flags |= F_TOKEN_BODY;
        }
        if status == 204 || status == 304 {
            self.end_of_response();
        } else if self.flags & F_CHUNKED != 0 {
            self.phase = P_CHUNK_SIZE;
            self.length = 0;
            self.pos = 0;
            self.flags &= !F_DIGITS_DONE;
        } else if self.flags & F_LENGTH != 0 {
            if self.length == 0 {
                self.end_of_response();
            } else {
                self.remaining = self.length;
                self.phase = P_BODY_LENGTH;
            }
        } else {
            self.phase = P_BODY_CLOSE;
        }
    }

    #[inline(always)]
    fn end_chunk_size(&mut self) {
        if self.pos == 0 || self.length > MAX_LENGTH {
            self.cut();
            return;
        }
        if self.length == 0 {
            self.phase = P_TRAILER_START;
        } else {
            self.remaining = self.length;
            self.phase = P_CHUNK_DATA;
        }
    }

    #[inline(always)]
    fn reset_head(&mut self) {
        self.probe = PROBE_OFF;
        self.phase = P_STATUS;
        self.pos = 0;
        self.head = 0;
        self.status = 0;
        self.flags = 0;
        self.header = HDR_OTHER;
        // An opaque zero: two adjacent zero stores become a memset, which
        // the eBPF build turns into a call to a byte-at-a-time loop.
        let zero = core::hint::black_box(0);
        self.length = zero;
        self.remaining = zero;
    }

    #[inline(always)]
    fn end_of_response(&mut self) {
        self.report |= self.found;
        self.found = 0;
        self.reset_head();
    }

    /// One body byte (chunk framing removed): true when secret.
    #[inline(always)]
    fn body_byte(&mut self, b: u8, table: &RedactTable) -> bool {
        if self.flags & F_TOKEN_BODY != 0 {
            if self.found & SHAPE_AWS_IMDS_TOKEN == 0 {
                self.found |= SHAPE_AWS_IMDS_TOKEN;
                self.values += 1;
            }
            return true;
        }
        match self.json {
            J_STRING => {
                if self.flags & F_ESCAPE != 0 {
                    self.flags &= !F_ESCAPE;
                } else if b == b'\\' {
                    self.flags |= F_ESCAPE | F_ESCAPED_KEY;
                } else if b == b'"' {
                    let mut m = table.lookup(self.hash, self.slen);
                    if self.flags & F_ESCAPED_KEY != 0 {
                        m |= table.key_shapes;
                    }
                    m &= self.mask;
                    self.key_shapes = m;
                    self.json = if m != 0 { J_AFTER_KEY } else { J_OUT };
                    return false;
                }
                self.hash = fold_key(self.hash, b);
                self.slen += 1;
                false
            }
            J_AFTER_KEY => {
                if b == b':' {
                    self.json = J_AFTER_COLON;
                } else if !is_ws(b) {
                    self.json = J_OUT;
                    self.outside(b);
                }
                false
            }
            J_AFTER_COLON => {
                if b == b'"' {
                    self.json = J_SECRET;
                    self.found |= self.key_shapes;
                    self.values += 1;
                } else if !is_ws(b) {
                    self.json = J_OUT;
                    self.outside(b);
                }
                false
            }
            J_SECRET => {
                if self.flags & F_ESCAPE != 0 {
                    self.flags &= !F_ESCAPE;
                    return true;
                }
                if b == b'\\' {
                    self.flags |= F_ESCAPE;
                    return true;
                }
                if b == b'"' {
                    self.json = J_OUT;
                    return false;
                }
                true
            }
            J_XML => {
                if b == b'<' {
                    self.json = J_OUT;
                    self.xml = 1;
                    return false;
                }
                true
            }
            _ => {
                self.outside(b);
                false
            }
        }
    }

    /// A body byte outside any JSON string or secret.
    #[inline(always)]
    fn outside(&mut self, b: u8) {
        if b == b'"' {
            self.json = J_STRING;
            self.hash = FNV_OFFSET;
            self.slen = 0;
            self.flags &= !(F_ESCAPE | F_ESCAPED_KEY);
            self.xml = 0;
            return;
        }
        if self.mask & SHAPE_AZURE_CERTIFICATES == 0 {
            return;
        }
        let k = self.xml as usize;
        if k < DATA_TAG.len() && b == DATA_TAG[k % DATA_TAG.len()] {
            self.xml += 1;
            if self.xml as usize == DATA_TAG.len() {
                self.xml = 0;
                self.json = J_XML;
                if self.found & SHAPE_AZURE_CERTIFICATES == 0 {
                    self.found |= SHAPE_AZURE_CERTIFICATES;
                }
                self.values += 1;
            }
        } else {
            self.xml = (b == b'<') as u8;
        }
    }

    /// Host helper: redacts `buf` in place as the next bytes of the stream,
    /// a byte at a time with [`Scanner::step`].
    pub fn redact(&mut self, buf: &mut [u8], table: &RedactTable) {
        for b in buf.iter_mut() {
            if self.step(*b, table) {
                *b = FILLER;
            }
        }
    }

    /// Host helper: the same through [`Scanner::run`] on `RUN`-byte blocks,
    /// the way the kernel program goes (a run at each block's start, then a
    /// `step` and a run wherever a run stops).
    pub fn redact_fast(&mut self, buf: &mut [u8], table: &RedactTable) {
        for piece in buf.chunks_mut(RUN) {
            let mut block = [0u8; RUN];
            block[..piece.len()].copy_from_slice(piece);
            // The block's start goes to a run first, as in the kernel.
            let mut j = self.run(&mut block, 0, piece.len(), table).0;
            while j < piece.len() {
                if self.step(block[j], table) {
                    block[j] = FILLER;
                }
                j = self.run(&mut block, j + 1, piece.len(), table).0;
            }
            piece.copy_from_slice(&block[..piece.len()]);
        }
    }

    /// Consumes, from `block[from..to]`, the bytes that only continue the
    /// current state (the inside of a JSON string or secret, bytes between
    /// strings, the rest of a header line, a header name, a token body),
    /// masking secret ones in place; stops at the first byte that needs
    /// [`Scanner::step`]. Returns (where it stopped, whether it masked).
    /// The same as stepping each byte, in a few instructions per byte: the
    /// kernel program steps the byte that ends a run and runs again.
    #[inline(always)]
    pub fn run(
        &mut self,
        block: &mut [u8; RUN],
        from: usize,
        to: usize,
        table: &RedactTable,
    ) -> (usize, bool) {
        let to = if to > RUN { RUN } else { to };
        let mut j = from;
        if j >= to {
            return (j, false);
        }
        match fresh(&self.phase) {
            P_BODY_LENGTH | P_BODY_CLOSE if self.probe < PROBE_LEN => {
                // The body's first byte, unless it starts "HTTP/1.", says
                // it is a body (what `head_answer` does with it).
                if self.probe != 0 || block[at(j)] == http_prefix(0) {
                    return (j, false);
                }
                self.probe = PROBE_OFF;
            }
            P_BODY_LENGTH | P_CHUNK_DATA | P_BODY_CLOSE => {}
            phase @ (P_STATUS | P_STATUS_CODE | P_STATUS_REST | P_LINE_START | P_NAME | P_VALUE
            | P_TRAILER_LINE) => {
                // The status line's fixed parts, then the rest of the head.
                if phase == P_STATUS {
                    j = self.run_version(block, j, to);
                }
                if fresh(&self.phase) == P_STATUS_CODE {
                    j = self.run_code(block, j, to);
                }
                return (self.run_head(block, j, to), false);
            }
            _ => return (j, false),
        }
        // Body bytes; a counted body leaves its last byte to `step`.
        let end = clamp(if self.phase == P_BODY_CLOSE {
            to
        } else {
            let left = self.remaining.saturating_sub(1);
            if ((to - j) as u64) > left {
                j + left as usize
            } else {
                to
            }
        });
        let start = j;
        let mut masked = false;
        let token = self.flags & F_TOKEN_BODY != 0;
        if token && self.found & SHAPE_AWS_IMDS_TOKEN == 0 {
            return (j, false);
        }
        if !token && self.flags & F_ESCAPE != 0 {
            return (j, false);
        }
        // Three loops in sequence, each taking over where the previous one
        // leaves the state (each starts from an opaque position: the
        // verifier walks it once, not once per way the previous one ends).
        let json = self.json;
        if !token && (json == J_AFTER_KEY || json == J_AFTER_COLON) {
            // After a secret key: whitespace, the colon and the value's
            // opening quote, as `body_byte` takes them.
            while j < end {
                let b = block[at(j)];
                if b == b':' && fresh(&self.json) == J_AFTER_KEY {
                    self.json = J_AFTER_COLON;
                } else if b == b'"' && fresh(&self.json) == J_AFTER_COLON {
                    self.json = J_SECRET;
                    self.found |= self.key_shapes;
                    self.values += 1;
                    j += 1;
                    break;
                } else if !is_ws(b) {
                    break;
                }
                j += 1;
            }
            j = self.opaque(j).min(end);
        }
        let json = fresh(&self.json);
        if token || json == J_SECRET || json == J_XML {
            // Masked up to a byte that ends the run (none in a token body),
            // in one loop for the three; a secret's closing quote ends it
            // here, as in `body_byte`.
            let (stop, stop2): (u16, u16) = if token {
                (0x100, 0x100)
            } else if json == J_SECRET {
                (b'"' as u16, b'\\' as u16)
            } else {
                (b'<' as u16, b'<' as u16)
            };
            let first = j;
            while j < end {
                let i = at(j);
                let b = block[i] as u16;
                if b == stop || b == stop2 {
                    break;
                }
                block[i] = FILLER;
                j += 1;
            }
            masked = j > first;
            if json == J_SECRET && j < end && block[at(j)] == b'"' {
                self.json = J_OUT;
                j += 1;
            }
            j = self.opaque(j).min(end);
        }
        let json = fresh(&self.json);
        if !token && (json == J_STRING || (json == J_OUT && self.xml == 0)) {
            // Between strings and in them, in one loop (a string opened
            // here is read on in it) so the verifier walks a single bound.
            // The string's hash and length stay in registers until the
            // run ends.
            let (mut h, mut n) = (self.hash, self.slen);
            while j < end {
                let b = block[at(j)];
                if fresh(&self.json) == J_STRING {
                    if b == b'\\' {
                        break;
                    }
                    if b == b'"' {
                        // A string no key can be closes here, as in
                        // `body_byte`; `step` looks the others up.
                        if fresh(&self.flags) & F_ESCAPED_KEY != 0 || table.may_be_key(h) {
                            break;
                        }
                        self.key_shapes = 0;
                        self.json = J_OUT;
                    } else {
                        h = fold_key(h, b);
                        n += 1;
                    }
                } else if b == b'<' {
                    break;
                } else if b == b'"' {
                    // A string opens, as in `outside`.
                    self.json = J_STRING;
                    h = FNV_OFFSET;
                    n = 0;
                    self.flags &= !(F_ESCAPE | F_ESCAPED_KEY);
                }
                j += 1;
            }
            self.hash = h;
            self.slen = n;
        }
        if self.phase != P_BODY_CLOSE {
            self.remaining -= (j - start) as u64;
        }
        (j, masked)
    }

    /// The rest of "HTTP/1.x" after its first byte, when the block holds it
    /// whole: straight-line compares (a loop here costs the eBPF verifier
    /// more than it has left); anything else goes to `step`.
    #[inline(always)]
    fn run_version(&mut self, block: &[u8; RUN], from: usize, to: usize) -> usize {
        if self.pos != 1 || to < from + 7 || self.head + 7 > MAX_HEAD {
            return from;
        }
        // Bytes 1..=6 of the prefix, then the version's last byte.
        let b = |k: usize| block[at(from + k)];
        let p = http_prefix;
        if b(0) != p(1) || b(1) != p(2) || b(2) != p(3) || b(3) != p(4) || b(4) != p(5) {
            return from;
        }
        if b(5) != p(6) || b(6) == b' ' || b(6) == b'\n' {
            return from;
        }
        self.pos = 7;
        self.phase = P_STATUS_VERSION;
        self.head += 7;
        // The space before the code, as `step` takes it.
        if to < from + 8 || self.head + 1 > MAX_HEAD || b(7) != b' ' {
            return from + 7;
        }
        self.phase = P_STATUS_CODE;
        self.pos = 0;
        self.status = 0;
        self.head += 1;
        from + 8
    }

    /// A status code's three digits and the byte after them, when the block
    /// holds them: what `step` does with each, in straight-line code.
    #[inline(always)]
    fn run_code(&mut self, block: &[u8; RUN], from: usize, to: usize) -> usize {
        if self.pos != 0 || to < from + 4 || self.head + 4 > MAX_HEAD {
            return from;
        }
        let b = |k: usize| block[at(from + k)];
        let (d0, d1, d2, end) = (b(0), b(1), b(2), b(3));
        if !d0.is_ascii_digit() || !d1.is_ascii_digit() || !d2.is_ascii_digit() {
            return from;
        }
        if end != b' ' && end != b'\r' && end != b'\n' {
            return from;
        }
        self.status = (d0 - b'0') as u16 * 100 + (d1 - b'0') as u16 * 10 + (d2 - b'0') as u16;
        self.pos = 3;
        self.phase = if end == b'\n' {
            P_LINE_START
        } else {
            P_STATUS_REST
        };
        self.head += 4;
        from + 4
    }

    /// Where a head run from `from` must stop: the block's end `to`, or
    /// the head bound (the byte past it goes to `step`, which cuts).
    #[inline(always)]
    fn head_end(&self, from: usize, to: usize) -> usize {
        let room = (MAX_HEAD.saturating_sub(self.head)) as usize;
        clamp(if to - from > room { from + room } else { to })
    }

    /// Header lines, up to the head bound, in one loop (so the verifier
    /// walks a single bound): the rest of the status line, names, values
    /// nothing is read from, `Content-Length` digits, and the line breaks
    /// between them. Stops, for `step`, at the names `start_value` acts on,
    /// at the end of a value it checks, at the head's end, and at anything
    /// `step` would cut on.
    #[inline(always)]
    fn run_head(&mut self, block: &[u8; RUN], from: usize, to: usize) -> usize {
        if from >= to {
            return from;
        }
        let end = self.head_end(from, to);
        let mut j = from;
        // The name's hash and length, in registers until the run ends (the
        // length is never branched on here: a name whose hash is one
        // `start_value` acts on goes to `step`, which compares both).
        let (mut h, mut n) = (self.hash, self.slen);
        while j < end {
            let b = block[at(j)];
            match fresh(&self.phase) {
                P_NAME => {
                    if b == b':' {
                        if h == H_CONTENT_LENGTH.0
                            || h == H_TRANSFER_ENCODING.0
                            || h == H_TOKEN_TTL.0
                        {
                            break;
                        }
                        self.header = HDR_OTHER;
                        self.phase = P_VALUE;
                    } else if b == b'\n' || b == b' ' || b == b'\t' {
                        break;
                    } else {
                        h = fold(h, b);
                        n += 1;
                    }
                }
                phase @ (P_VALUE | P_STATUS_REST | P_TRAILER_LINE) => {
                    let other = phase != P_VALUE || fresh(&self.header) == HDR_OTHER;
                    if b == b'\n' {
                        if phase == P_TRAILER_LINE || !other {
                            break;
                        }
                        self.phase = P_LINE_START;
                    } else if b != b'\r' && !other {
                        // Only what `value_byte` takes without cutting.
                        if fresh(&self.header) != HDR_CONTENT_LENGTH {
                            break;
                        }
                        if b.is_ascii_digit() {
                            let length = fresh(&self.length);
                            if fresh(&self.flags) & F_DIGITS_DONE != 0 || length >= MAX_LENGTH {
                                break;
                            }
                            self.length = length * 10 + (b - b'0') as u64;
                            self.pos = 1;
                        } else if b == b' ' || b == b'\t' {
                            if fresh(&self.pos) != 0 {
                                self.flags |= F_DIGITS_DONE;
                            }
                        } else {
                            break;
                        }
                    }
                }
                P_LINE_START => {
                    if b == b'\n' || b == b':' || (is_ws(b) && b != b'\r') {
                        break;
                    }
                    if b != b'\r' {
                        self.phase = P_NAME;
                        h = fold(FNV_OFFSET, b);
                        n = 1;
                    }
                }
                _ => break,
            }
            j += 1;
        }
        self.hash = h;
        self.slen = n;
        self.head += (j - from) as u32;
        j
    }
}

/// Names of the shapes in `bits` (`custom` names the custom keys in order).
#[cfg(not(target_arch = "bpf"))]
pub fn shape_names<'a>(bits: u32, custom: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    let builtin = BUILTIN_SHAPES
        .iter()
        .filter(move |(_, b)| bits & b != 0)
        .map(|(n, _)| *n);
    let customs = custom
        .iter()
        .enumerate()
        .filter(move |(i, _)| {
            *i < MAX_CUSTOM && bits & (1 << (SHAPE_CUSTOM_FIRST + *i as u32)) != 0
        })
        .map(|(_, n)| *n);
    let cut = (bits & SHAPE_CUT != 0).then_some("cut");
    builtin.chain(customs).chain(cut)
}
