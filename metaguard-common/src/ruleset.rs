//! A fixed-size bitset of allow rules. Each identity lookup (executable, uid,
//! gid, cgroup) and each protected destination yields the set of rules it
//! satisfies; a connection is allowed when the intersection is not empty.
//! Fixed size keeps it a plain map value and lets the verifier unroll loops.

/// Number of 64-bit words: the policy holds at most `MAX_RULES` allow rules.
pub const RULE_WORDS: usize = 4;
pub const MAX_RULES: usize = RULE_WORDS * 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub words: [u64; RULE_WORDS],
}

impl RuleSet {
    pub const EMPTY: RuleSet = RuleSet {
        words: [0; RULE_WORDS],
    };
    pub const ALL: RuleSet = RuleSet {
        words: [u64::MAX; RULE_WORDS],
    };

    /// Sets rule `i`; indices at or past `MAX_RULES` are ignored (the policy
    /// compiler rejects such policies before they get here).
    #[inline(always)]
    pub fn insert(&mut self, i: usize) {
        if i < MAX_RULES {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    #[inline(always)]
    pub fn contains(&self, i: usize) -> bool {
        i < MAX_RULES && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    #[inline(always)]
    pub fn and(&self, o: &RuleSet) -> RuleSet {
        let mut r = RuleSet::EMPTY;
        let mut i = 0;
        while i < RULE_WORDS {
            r.words[i] = self.words[i] & o.words[i];
            i += 1;
        }
        r
    }

    /// Every rule not in `self` (bits past the last rule included: callers
    /// intersect with real rule sets).
    #[inline(always)]
    pub fn not(&self) -> RuleSet {
        let mut r = RuleSet::EMPTY;
        let mut i = 0;
        while i < RULE_WORDS {
            r.words[i] = !self.words[i];
            i += 1;
        }
        r
    }

    #[inline(always)]
    pub fn or(&self, o: &RuleSet) -> RuleSet {
        let mut r = RuleSet::EMPTY;
        let mut i = 0;
        while i < RULE_WORDS {
            r.words[i] = self.words[i] | o.words[i];
            i += 1;
        }
        r
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        let mut i = 0;
        while i < RULE_WORDS {
            if self.words[i] != 0 {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The lowest rule in the set: the rule an event names when several match.
    #[inline(always)]
    pub fn first(&self) -> Option<u16> {
        let mut i = 0;
        while i < RULE_WORDS {
            let w = self.words[i];
            if w != 0 {
                return Some((i * 64) as u16 + w.trailing_zeros() as u16);
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_first() {
        let mut s = RuleSet::EMPTY;
        assert!(s.is_empty());
        assert_eq!(s.first(), None);
        s.insert(200);
        s.insert(70);
        assert!(s.contains(70) && s.contains(200) && !s.contains(71));
        assert_eq!(s.first(), Some(70));
        s.insert(MAX_RULES); // ignored
        assert_eq!(s.words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    }

    #[test]
    fn and_or() {
        let mut a = RuleSet::EMPTY;
        let mut b = RuleSet::EMPTY;
        a.insert(1);
        a.insert(130);
        b.insert(130);
        b.insert(255);
        assert_eq!(a.and(&b).first(), Some(130));
        assert!(a.and(&RuleSet::EMPTY).is_empty());
        let u = a.or(&b);
        assert!(u.contains(1) && u.contains(130) && u.contains(255));
        assert_eq!(RuleSet::ALL.and(&a), a);
    }
}
