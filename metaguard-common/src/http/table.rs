//! The header names the kernel wants to know about, as the daemon lists them.
#[cfg(not(target_arch = "bpf"))]
use super::chars::is_tchar;

pub const TABLE_ENTRIES: usize = 16;
pub const TABLE_NAME_MAX: usize = 32;

/// Entry 0, by convention: IMDSv2's session token header.
pub const TOKEN_ENTRY: u8 = 0;
pub const METADATA_TOKEN_HEADER: &[u8] = b"x-aws-ec2-metadata-token";

/// Up to 16 lowercase header names; an entry with length 0 is unused and
/// never matches. All-zero is an empty table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderTable {
    pub lens: [u8; TABLE_ENTRIES],
    pub names: [[u8; TABLE_NAME_MAX]; TABLE_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<HeaderTable>() == 16 + 16 * 32);

impl HeaderTable {
    pub const EMPTY: HeaderTable = HeaderTable {
        lens: [0; TABLE_ENTRIES],
        names: [[0; TABLE_NAME_MAX]; TABLE_ENTRIES],
    };

    /// The table with only [`METADATA_TOKEN_HEADER`] at [`TOKEN_ENTRY`].
    pub const fn with_defaults() -> HeaderTable {
        let mut t = Self::EMPTY;
        let mut i = 0;
        while i < METADATA_TOKEN_HEADER.len() {
            t.names[TOKEN_ENTRY as usize][i] = METADATA_TOKEN_HEADER[i];
            i += 1;
        }
        t.lens[TOKEN_ENTRY as usize] = METADATA_TOKEN_HEADER.len() as u8;
        t
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    Full,
    /// Empty, longer than 32 bytes, or not a token.
    BadName,
}

/// Host-side construction (runtime slices; never runs in the kernel).
#[cfg(not(target_arch = "bpf"))]
impl HeaderTable {
    /// Adds `name` (any case) and returns its entry; a name already present
    /// returns its existing entry.
    pub fn push(&mut self, name: &[u8]) -> Result<u8, TableError> {
        if name.is_empty() || name.len() > TABLE_NAME_MAX || !name.iter().all(|&b| is_tchar(b)) {
            return Err(TableError::BadName);
        }
        if let Some(i) = self.find(name) {
            return Ok(i);
        }
        let free = self
            .lens
            .iter()
            .position(|&l| l == 0)
            .ok_or(TableError::Full)?;
        self.names[free] = [0; TABLE_NAME_MAX];
        for (dst, src) in self.names[free].iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        self.lens[free] = name.len() as u8;
        Ok(free as u8)
    }

    /// The entry holding `name`, compared case-insensitively.
    pub fn find(&self, name: &[u8]) -> Option<u8> {
        (0..TABLE_ENTRIES)
            .find(|&i| {
                let len = self.lens[i] as usize;
                len != 0 && len <= TABLE_NAME_MAX && self.names[i][..len].eq_ignore_ascii_case(name)
            })
            .map(|i| i as u8)
    }
}

impl Default for HeaderTable {
    fn default() -> Self {
        Self::EMPTY
    }
}
