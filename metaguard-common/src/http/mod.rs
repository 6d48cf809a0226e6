//! HTTP/1.x request checker for requests sent to metadata servers. One byte
//! at a time, O(1) per byte, no allocation: the same code runs in the sk_msg
//! program (state in a map value) and on the host. Deny by default: anything
//! not understood is a [`Reject`] with a reason.
//!
//! - `parser`: the state, the driver and the request line.
//! - `canon`: streaming canonicalisation of the target.
//! - `headers`: header fields, the header table, Content-Length.
//! - `table`: [`HeaderTable`], the header names of interest.
//! - `key`: [`HttpKey`], the pattern map key, filled from parser state.
//! - `pattern` (host): policy patterns through the same parser.
//! - `reference` (host, feature `host`): a matcher that simulates the kernel.
mod canon;
mod chars;
mod fast;
mod headers;
mod key;
mod parser;
#[cfg(not(target_arch = "bpf"))]
mod pattern;
#[cfg(any(test, feature = "host"))]
mod reference;
mod reject;
mod table;
#[cfg(test)]
mod tests;

pub use key::{HttpKey, KeyError, EVENT_TARGET, KEY_EXACT, KEY_PREFIX};
pub use parser::{HttpParser, Step};
#[cfg(not(target_arch = "bpf"))]
pub use pattern::canonical_pattern;
#[cfg(any(test, feature = "host"))]
pub use reference::matches;
pub use reject::Reject;
pub use table::{
    HeaderTable, TableError, METADATA_TOKEN_HEADER, TABLE_ENTRIES, TABLE_NAME_MAX, TOKEN_ENTRY,
};

pub const MAX_METHOD: usize = 16;
/// Canonical target buffer (path and `?query`); a power of two for masking.
pub const TARGET_CAP: usize = 256;
/// Path segments kept on the stack; a power of two for masking.
pub const MAX_DEPTH: usize = 32;
/// Request line and header block, CRLFs included.
pub const MAX_HEADER_BLOCK: u16 = 4096;
pub const MAX_CONTENT_LENGTH_DIGITS: u8 = 9;
