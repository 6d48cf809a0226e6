//! The pattern map key, shared by the daemon (which inserts policy patterns)
//! and the kernel (which builds keys from a parsed request and looks them up).
#[cfg(not(target_arch = "bpf"))]
use super::chars::is_tchar;
use super::{
    parser::{HttpParser, F_QUERY},
    MAX_METHOD, TARGET_CAP,
};

pub const KEY_EXACT: u8 = 0;
/// The target is a canonical path prefix ending in `/`; it matches paths
/// with at least one more non-empty segment and no query.
pub const KEY_PREFIX: u8 = 1;

/// Unused bytes are always zero so that equal patterns hash equal.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpKey {
    pub scope: u32,
    pub kind: u8,
    pub method_len: u8,
    pub target_len: u16,
    pub method: [u8; MAX_METHOD],
    pub target: [u8; TARGET_CAP],
}

const _: () = assert!(core::mem::size_of::<HttpKey>() == 4 + 1 + 1 + 2 + MAX_METHOD + TARGET_CAP);

impl HttpKey {
    pub const ZERO: HttpKey = HttpKey {
        scope: 0,
        kind: 0,
        method_len: 0,
        target_len: 0,
        method: [0; MAX_METHOD],
        target: [0; TARGET_CAP],
    };
}

/// How much of the target events carry.
pub const EVENT_TARGET: usize = 128;

/// Kernel side: keys from the parser state, fixed-length loops only.
impl HttpParser {
    /// For events, without loops: the method bytes and length, and the
    /// first `EVENT_TARGET` bytes of the canonical target with its full
    /// length (bytes past the length are not meaningful).
    pub fn event_fields(&self) -> (&[u8; super::MAX_METHOD], u8, &[u8; EVENT_TARGET], u16) {
        let (head, _) = self.target.split_at(EVENT_TARGET);
        let head: &[u8; EVENT_TARGET] = head.try_into().unwrap_or(&[0; EVENT_TARGET]);
        (&self.method, self.method_len, head, self.target_len)
    }

    /// The key of the whole canonical target (query included).
    pub fn fill_exact(&self, scope: u32, key: &mut HttpKey) {
        self.fill(scope, KEY_EXACT, self.target_len, key);
    }

    /// The key of the path cut at boundary `i`; false when there is no such
    /// boundary or the request has a query (queries never match wildcards).
    pub fn fill_prefix(&self, scope: u32, i: u8, key: &mut HttpKey) -> bool {
        if self.flags & F_QUERY != 0 {
            return false;
        }
        match self.boundary(i) {
            Some(end) => {
                self.fill(scope, KEY_PREFIX, end, key);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn fill(&self, scope: u32, kind: u8, len: u16, key: &mut HttpKey) {
        key.scope = scope;
        key.kind = kind;
        key.method_len = self.method_len;
        key.target_len = len;
        // Word by word, bytes past the length masked to zero: 2 + 32 steps
        // of straight-line code (a byte loop costs the verifier far more).
        copy_masked::<{ MAX_METHOD / 8 }>(&self.method, &mut key.method, self.method_len as usize);
        copy_masked::<{ TARGET_CAP / 8 }>(&self.target, &mut key.target, len as usize);
    }
}

/// Copies `W` little-endian words from `src` to `dst`, keeping the first
/// `len` bytes and zeroing the rest.
#[inline(always)]
fn copy_masked<const W: usize>(src: &[u8], dst: &mut [u8], len: usize) {
    if src.len() < W * 8 || dst.len() < W * 8 {
        return;
    }
    let mut w = 0;
    while w < W {
        let start = w * 8;
        let mask = if len >= start + 8 {
            u64::MAX
        } else if len <= start {
            0
        } else {
            (1u64 << ((len - start) * 8)) - 1
        };
        // In bounds: w < W and both slices hold W words.
        unsafe {
            let v = core::ptr::read_unaligned(src.as_ptr().add(start) as *const u64);
            core::ptr::write_unaligned(dst.as_mut_ptr().add(start) as *mut u64, v & mask);
        }
        w += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Empty, longer than 16 bytes or not a token.
    BadMethod,
    TargetTooLong,
    /// A prefix must start and end with `/`.
    NotPrefix,
}

/// Host side: keys from policy patterns (runtime slices; not for the kernel).
#[cfg(not(target_arch = "bpf"))]
impl HttpKey {
    /// `target` must already be canonical (see [`canonical_pattern`]).
    pub fn exact(scope: u32, method: &[u8], target: &[u8]) -> Result<HttpKey, KeyError> {
        Self::build(scope, KEY_EXACT, method, target)
    }

    /// `prefix` is a canonical path ending in `/` (the pattern minus `*`).
    pub fn prefix(scope: u32, method: &[u8], prefix: &[u8]) -> Result<HttpKey, KeyError> {
        if !prefix.starts_with(b"/") || !prefix.ends_with(b"/") || prefix.contains(&b'?') {
            return Err(KeyError::NotPrefix);
        }
        Self::build(scope, KEY_PREFIX, method, prefix)
    }

    fn build(scope: u32, kind: u8, method: &[u8], target: &[u8]) -> Result<HttpKey, KeyError> {
        if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) {
            return Err(KeyError::BadMethod);
        }
        if target.len() > TARGET_CAP {
            return Err(KeyError::TargetTooLong);
        }
        let mut key = HttpKey::ZERO;
        key.scope = scope;
        key.kind = kind;
        key.method_len = method.len() as u8;
        key.target_len = target.len() as u16;
        key.method[..method.len()].copy_from_slice(method);
        key.target[..target.len()].copy_from_slice(target);
        Ok(key)
    }
}
