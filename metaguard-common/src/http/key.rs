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

/// Kernel side: keys from the parser state, fixed-length loops only.
impl HttpParser {
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
        for i in 0..MAX_METHOD {
            key.method[i] = if i < self.method_len as usize {
                self.method[i]
            } else {
                0
            };
        }
        for i in 0..TARGET_CAP {
            key.target[i] = if i < len as usize { self.target[i] } else { 0 };
        }
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
