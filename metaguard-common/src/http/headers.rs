//! Header fields: names matched incrementally against the header table and
//! two built-in names, values checked, Content-Length parsed.
use super::{
    chars::{is_ows, is_tchar, is_value_char},
    parser::{
        HttpParser, Step, F_CONTENT_LENGTH, F_IN_CONTENT_LENGTH, P_BLOCK_LF, P_FIELD_LF,
        P_FIELD_NAME, P_FIELD_VALUE,
    },
    reject::Reject,
    table::{HeaderTable, TABLE_ENTRIES, TABLE_NAME_MAX},
    MAX_CONTENT_LENGTH_DIGITS,
};

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const B_CONTENT_LENGTH: u8 = 1;
const B_TRANSFER_ENCODING: u8 = 2;

// Content-Length value progress (`sub`).
const CL_LEADING: u8 = 0;
const CL_DIGITS: u8 = 1;
const CL_TRAILING: u8 = 2;

impl HttpParser {
    /// First byte of a line in the header block.
    pub(super) fn on_field_start(&mut self, b: u8, table: &HeaderTable) -> Result<Step, Reject> {
        match b {
            b'\r' => {
                self.phase = P_BLOCK_LF;
                Ok(Step::Continue)
            }
            b' ' | b'\t' => Err(Reject::ObsFold),
            _ if is_tchar(b) => {
                self.name_len = 0;
                self.name_mask = u16::MAX;
                self.builtin_mask = B_CONTENT_LENGTH | B_TRANSFER_ENCODING;
                self.phase = P_FIELD_NAME;
                self.name_byte(b, table);
                Ok(Step::Continue)
            }
            _ => Err(Reject::BadHeaderName),
        }
    }

    pub(super) fn on_field_name(&mut self, b: u8, table: &HeaderTable) -> Result<Step, Reject> {
        match b {
            b':' => self.end_name(table)?,
            b' ' | b'\t' => return Err(Reject::SpaceBeforeColon),
            _ if is_tchar(b) => self.name_byte(b, table),
            _ => return Err(Reject::BadHeaderName),
        }
        Ok(Step::Continue)
    }

    /// Narrows the still-matching masks by the name byte at `name_len`.
    /// Entries already ruled out cost nothing: most names stop matching
    /// every entry after their first byte, so the table is walked about once
    /// per field rather than once per byte.
    fn name_byte(&mut self, b: u8, table: &HeaderTable) {
        let c = b.to_ascii_lowercase();
        let pos = self.name_len as usize;
        let mut mask = self.name_mask;
        if mask != 0 {
            for e in 0..TABLE_ENTRIES {
                let bit = 1u16 << e;
                if mask & bit == 0 {
                    continue;
                }
                let len = table.lens[e] as usize;
                let same = pos < len
                    && pos < TABLE_NAME_MAX
                    && table.names[e][pos & (TABLE_NAME_MAX - 1)] == c;
                if !same {
                    mask &= !bit;
                }
            }
            self.name_mask = mask;
        }
        if self.builtin_mask & B_CONTENT_LENGTH != 0 && CONTENT_LENGTH.get(pos) != Some(&c) {
            self.builtin_mask &= !B_CONTENT_LENGTH;
        }
        if self.builtin_mask & B_TRANSFER_ENCODING != 0 && TRANSFER_ENCODING.get(pos) != Some(&c) {
            self.builtin_mask &= !B_TRANSFER_ENCODING;
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    /// The colon: a whole-name match is one whose length is the name's.
    fn end_name(&mut self, table: &HeaderTable) -> Result<(), Reject> {
        let n = self.name_len as usize;
        for e in 0..TABLE_ENTRIES {
            if table.lens[e] as usize == n {
                self.seen |= self.name_mask & (1u16 << e);
            }
        }
        if self.builtin_mask & B_TRANSFER_ENCODING != 0 && n == TRANSFER_ENCODING.len() {
            return Err(Reject::TransferEncoding);
        }
        self.flags &= !F_IN_CONTENT_LENGTH;
        if self.builtin_mask & B_CONTENT_LENGTH != 0 && n == CONTENT_LENGTH.len() {
            if self.flags & F_CONTENT_LENGTH != 0 {
                return Err(Reject::DuplicateContentLength);
            }
            self.flags |= F_CONTENT_LENGTH | F_IN_CONTENT_LENGTH;
        }
        self.sub = CL_LEADING;
        self.phase = P_FIELD_VALUE;
        Ok(())
    }

    pub(super) fn on_field_value(&mut self, b: u8) -> Result<Step, Reject> {
        let in_cl = self.flags & F_IN_CONTENT_LENGTH != 0;
        if b == b'\r' {
            if in_cl && self.sub == CL_LEADING {
                return Err(Reject::BadContentLength);
            }
            self.phase = P_FIELD_LF;
            return Ok(Step::Continue);
        }
        if !is_value_char(b) {
            return Err(Reject::BadHeaderValue);
        }
        if in_cl {
            self.content_length_byte(b)?;
        }
        Ok(Step::Continue)
    }

    /// `OWS 1*9DIGIT OWS`.
    fn content_length_byte(&mut self, b: u8) -> Result<(), Reject> {
        match (self.sub, is_ows(b)) {
            (CL_LEADING | CL_TRAILING, true) => Ok(()),
            (CL_DIGITS, true) => {
                self.sub = CL_TRAILING;
                Ok(())
            }
            (CL_LEADING | CL_DIGITS, false) if b.is_ascii_digit() => {
                if self.cl_digits >= MAX_CONTENT_LENGTH_DIGITS {
                    return Err(Reject::BadContentLength);
                }
                self.cl_digits += 1;
                self.content_length = self.content_length * 10 + (b - b'0') as u32;
                self.sub = CL_DIGITS;
                Ok(())
            }
            _ => Err(Reject::BadContentLength),
        }
    }
}
