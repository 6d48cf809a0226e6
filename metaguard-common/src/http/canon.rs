//! Streaming canonicalisation of the request target, as servers read it:
//! unreserved escapes decoded, other escapes uppercased, dot segments and
//! empty segments removed, the query kept. Each byte is O(1): segment starts
//! live on a fixed stack, so `..` truncates without scanning.
use super::{
    chars::{hex_digit, hex_value, is_pchar, is_query_char, is_unreserved},
    parser::{target_byte_reject, HttpParser, Step, F_QUERY, P_QUERY},
    reject::Reject,
    MAX_DEPTH, TARGET_CAP,
};

const SEG_EMPTY: u8 = 0;
const SEG_DOT: u8 = 1;
const SEG_DOTDOT: u8 = 2;
pub(super) const SEG_OTHER: u8 = 3;

impl HttpParser {
    /// The root `/` of every path.
    pub(super) fn start_path(&mut self) -> Result<(), Reject> {
        self.target_len = 0;
        self.depth = 0;
        self.sub = 0;
        self.put(b'/')?;
        self.push_segment()
    }

    pub(super) fn on_path(&mut self, b: u8) -> Result<Step, Reject> {
        if self.sub != 0 {
            return self.on_path_escape(b);
        }
        match b {
            b'/' => self.end_segment()?,
            b'%' => self.sub = 1,
            b'?' => {
                self.finish_path()?;
                self.put(b'?')?;
                self.flags |= F_QUERY;
                self.phase = P_QUERY;
            }
            b' ' => {
                self.finish_path()?;
                self.start_version();
            }
            _ if is_pchar(b) => self.path_char(b)?,
            _ => return Err(target_byte_reject(b)),
        }
        Ok(Step::Continue)
    }

    /// The query is kept as sent, except that escapes get uppercase hex.
    pub(super) fn on_query(&mut self, b: u8) -> Result<Step, Reject> {
        if self.sub != 0 {
            let v = match self.escape_byte(b)? {
                Some(v) => v,
                None => return Ok(Step::Continue),
            };
            if v == 0 {
                return Err(Reject::Nul);
            }
            self.put_escape(v)?;
            return Ok(Step::Continue);
        }
        match b {
            b'%' => self.sub = 1,
            b' ' => self.start_version(),
            _ if is_query_char(b) => self.put(b)?,
            _ => return Err(target_byte_reject(b)),
        }
        Ok(Step::Continue)
    }

    fn on_path_escape(&mut self, b: u8) -> Result<Step, Reject> {
        let v = match self.escape_byte(b)? {
            Some(v) => v,
            None => return Ok(Step::Continue),
        };
        match v {
            b'/' => return Err(Reject::EncodedSlash),
            b'\\' => return Err(Reject::Backslash),
            0 => return Err(Reject::Nul),
            _ if is_unreserved(v) => self.path_char(v)?,
            _ => {
                self.put_escape(v)?;
                self.dots = SEG_OTHER;
            }
        }
        Ok(Step::Continue)
    }

    /// One hex digit of a `%XX` (`sub` 1 or 2); the value once both are read.
    #[inline(always)]
    fn escape_byte(&mut self, b: u8) -> Result<Option<u8>, Reject> {
        let d = hex_value(b).ok_or(Reject::BadPercent)?;
        if self.sub == 1 {
            self.pct_hi = d;
            self.sub = 2;
            return Ok(None);
        }
        self.sub = 0;
        Ok(Some((self.pct_hi << 4) | d))
    }

    /// A path byte other than `/`, after decoding.
    #[inline(always)]
    fn path_char(&mut self, c: u8) -> Result<(), Reject> {
        self.dots = if c == b'.' && self.dots < SEG_OTHER {
            self.dots + 1
        } else {
            SEG_OTHER
        };
        self.put(c)
    }

    /// A `/` ends the current segment.
    fn end_segment(&mut self) -> Result<(), Reject> {
        match self.dots {
            SEG_EMPTY => Ok(()),
            SEG_DOT => {
                self.drop_segment();
                Ok(())
            }
            SEG_DOTDOT => self.pop_segment(),
            _ => {
                self.put(b'/')?;
                self.push_segment()
            }
        }
    }

    /// End of the path: a last `.` or `..` keeps the trailing slash.
    fn finish_path(&mut self) -> Result<(), Reject> {
        match self.dots {
            SEG_DOT => self.drop_segment(),
            SEG_DOTDOT => self.pop_segment()?,
            _ => {}
        }
        self.path_len = self.target_len;
        Ok(())
    }

    #[inline(always)]
    fn top(&self) -> u16 {
        self.segs[(self.depth.wrapping_sub(1) as usize) & (MAX_DEPTH - 1)]
    }

    /// Removes the current segment's bytes.
    #[inline(always)]
    fn drop_segment(&mut self) {
        self.target_len = self.top();
        self.dots = SEG_EMPTY;
    }

    /// `..`: back to the start of the previous segment.
    fn pop_segment(&mut self) -> Result<(), Reject> {
        if self.depth <= 1 {
            return Err(Reject::DotAboveRoot);
        }
        self.depth -= 1;
        self.drop_segment();
        Ok(())
    }

    fn push_segment(&mut self) -> Result<(), Reject> {
        if self.depth as usize >= MAX_DEPTH {
            return Err(Reject::TooDeep);
        }
        self.segs[(self.depth as usize) & (MAX_DEPTH - 1)] = self.target_len;
        self.depth += 1;
        self.dots = SEG_EMPTY;
        Ok(())
    }

    #[inline(always)]
    fn put(&mut self, c: u8) -> Result<(), Reject> {
        if self.target_len as usize >= TARGET_CAP {
            return Err(Reject::TargetTooLong);
        }
        self.target[(self.target_len as usize) & (TARGET_CAP - 1)] = c;
        self.target_len += 1;
        Ok(())
    }

    #[inline(always)]
    fn put_escape(&mut self, v: u8) -> Result<(), Reject> {
        self.put(b'%')?;
        self.put(hex_digit(v >> 4))?;
        self.put(hex_digit(v))
    }
}

/// Wildcard support: where the canonical path may be cut for a prefix match.
impl HttpParser {
    /// Offsets just after each `/` of the canonical path, except one equal
    /// to the path's end (a prefix must leave a non-empty segment below it).
    pub fn boundary_count(&self) -> u8 {
        if self.depth == 0 {
            return 0;
        }
        if self.top() >= self.path_len {
            self.depth - 1
        } else {
            self.depth
        }
    }

    /// Boundary `i` (0 = just after the root `/`), shallowest first.
    pub fn boundary(&self, i: u8) -> Option<u16> {
        if i >= self.boundary_count() {
            return None;
        }
        Some(self.segs[(i as usize) & (MAX_DEPTH - 1)])
    }
}
