//! The common bytes of a request, consumed without the full dispatch: the
//! kernel checks every byte of every request, and most of them are plain
//! header values, plain path characters, or names no tracked header has.
//! `feed_fast` either does exactly what `feed` would do with the byte and
//! returns true, or changes nothing and returns false (then call `feed`).
use super::{
    canon::SEG_OTHER,
    chars::{is_query_char, is_tchar, is_unreserved, is_value_char},
    parser::{
        HttpParser, F_IN_CONTENT_LENGTH, P_FIELD_NAME, P_FIELD_VALUE, P_METHOD, P_PATH, P_QUERY,
        P_VERSION,
    },
    MAX_HEADER_BLOCK, MAX_METHOD, TARGET_CAP,
};

/// What `on_version` expects before the minor version digit (8 bytes with
/// padding, so that the masked index stays in bounds).
const HTTP_1: &[u8; 8] = b"HTTP/1.\0";

impl HttpParser {
    /// Consumes `b` when it changes nothing but counters and the target.
    #[inline(always)]
    pub fn feed_fast(&mut self, b: u8) -> bool {
        if self.block_len >= MAX_HEADER_BLOCK {
            return false;
        }
        let done = match self.phase {
            P_METHOD => {
                let plain = is_tchar(b) && (self.method_len as usize) < MAX_METHOD;
                if plain {
                    self.method[(self.method_len as usize) & (MAX_METHOD - 1)] = b;
                    self.method_len += 1;
                }
                plain
            }
            // "HTTP/1." one byte at a time; the minor version and the CR
            // take the full step.
            P_VERSION => {
                let plain =
                    (self.sub as usize) < HTTP_1.len() - 1 && HTTP_1[(self.sub as usize) & 7] == b;
                if plain {
                    self.sub += 1;
                }
                plain
            }
            P_FIELD_VALUE => self.flags & F_IN_CONTENT_LENGTH == 0 && is_value_char(b),
            P_FIELD_NAME => {
                let plain = self.name_mask == 0 && self.builtin_mask == 0 && is_tchar(b);
                if plain {
                    self.name_len = self.name_len.saturating_add(1);
                }
                plain
            }
            P_PATH | P_QUERY => {
                let plain = self.sub == 0
                    && (self.target_len as usize) < TARGET_CAP
                    && if self.phase == P_PATH {
                        is_unreserved(b) && b != b'.'
                    } else {
                        is_query_char(b)
                    };
                if plain {
                    if self.phase == P_PATH {
                        self.dots = SEG_OTHER;
                    }
                    self.target[(self.target_len as usize) & (TARGET_CAP - 1)] = b;
                    self.target_len += 1;
                }
                plain
            }
            _ => false,
        };
        if done {
            self.block_len += 1;
        }
        done
    }

    /// Ready for a new request, for callers that reuse one state: only the
    /// counters and flags are cleared (the arrays are read only up to their
    /// lengths), which is much cheaper than clearing all of it in the kernel.
    #[inline(always)]
    pub fn restart(&mut self) {
        self.phase = 0;
        self.reject = 0;
        self.flags = 0;
        self.method_len = 0;
        self.sub = 0;
        self.pct_hi = 0;
        self.dots = 0;
        self.depth = 0;
        self.target_len = 0;
        self.path_len = 0;
        self.block_len = 0;
        self.name_len = 0;
        self.seen = 0;
        self.name_mask = 0;
        self.builtin_mask = 0;
        self.cl_digits = 0;
        self._pad = [0; 2];
        self.content_length = 0;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::String, vec::Vec};

    use super::super::{HeaderTable, HttpParser, Step};

    /// Feeds `input` byte by byte through `feed` alone and through
    /// `feed_fast`-then-`feed`, asserting identical states after every byte.
    fn same_as_feed(input: &[u8], table: &HeaderTable) -> usize {
        let (mut slow, mut fast) = (HttpParser::new(), HttpParser::new());
        let mut fast_bytes = 0;
        for (i, &b) in input.iter().enumerate() {
            let want = slow.feed(b, table);
            let got = if fast.feed_fast(b) {
                fast_bytes += 1;
                Step::Continue
            } else {
                fast.feed(b, table)
            };
            assert_eq!(
                got,
                want,
                "step at byte {i} of {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                fast,
                slow,
                "state at byte {i} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        fast_bytes
    }

    fn table() -> HeaderTable {
        let mut t = HeaderTable::with_defaults();
        t.push(b"metadata-flavor").unwrap();
        t
    }

    #[test]
    fn fast_path_matches_feed_on_real_requests() {
        let t = table();
        let requests: &[&[u8]] = &[
            b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: keep-alive\r\n\r\n",
            b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
            b"GET /computeMetadata/v1/instance/?recursive=true&x=%41 HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
            b"GET http://169.254.169.254/a/./b/../c//d%2e%2E/e HTTP/1.0\r\nX-AWS-EC2-Metadata-Token: abc\xff\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length:  12 \r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nX: a\nb\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
        ];
        let mut fast = 0;
        for r in requests {
            fast += same_as_feed(r, &t);
        }
        assert!(fast > 100, "the fast path takes the common bytes ({fast})");
    }

    #[test]
    fn fast_path_matches_feed_on_random_inputs() {
        // Bytes drawn mostly from what requests are made of, so that random
        // inputs get deep into the header block.
        const ALPHABET: &[u8] = b"GETPUT /?%.:-_~aZ09\r\n\t\x00\x7f\xc3=&#\\@xX";
        let t = table();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut input: Vec<u8> = b"GET /".to_vec();
            if next() % 4 == 0 {
                input = b"GET /a/b HTTP/1.1\r\nHost: x\r\n".to_vec();
            }
            for _ in 0..len {
                let r = next();
                input.push(if r % 8 == 0 {
                    (r >> 8) as u8
                } else {
                    ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                });
            }
            same_as_feed(&input, &t);
        }
    }

    #[test]
    fn restart_is_a_fresh_parser() {
        let t = table();
        let mut p = HttpParser::new();
        for &b in b"GET /a/b?c HTTP/1.1\r\nX-aws-ec2-metadata-token: t\r\nContent-Length: 3\r\n\r\n"
        {
            p.feed(b, &t);
        }
        assert!(p.is_complete());
        p.restart();
        let mut fresh = HttpParser::new();
        for &b in b"PUT /x HTTP/1.1\r\n\r\n" {
            assert_eq!(p.feed(b, &t), fresh.feed(b, &t));
        }
        assert_eq!(
            (p.method(), p.target(), p.headers_seen()),
            (fresh.method(), fresh.target(), 0)
        );
    }
}
