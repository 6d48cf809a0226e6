//! Latency statistics for the loop modes.

use std::collections::BTreeMap;

use crate::errnames::errno_name;
use crate::json::quote;

#[derive(Debug, Default)]
pub struct LoopStats {
    pub requested: u64,
    /// Latency of every attempt (successful or not), ns.
    pub samples: Vec<u64>,
    pub ok: u64,
    /// errno -> count
    pub errors: BTreeMap<i32, u64>,
    pub first_errno: i32,
    pub stopped_early: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub min: u64,
    pub median: u64,
    pub p90: u64,
    pub p99: u64,
    pub mean: u64,
    pub max: u64,
}

/// Nearest-rank percentile of sorted data (p in 0..=100).
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

pub fn summarize(samples: &[u64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let sum: u128 = s.iter().map(|&x| x as u128).sum();
    Some(Summary {
        min: s[0],
        median: percentile(&s, 50),
        p90: percentile(&s, 90),
        p99: percentile(&s, 99),
        mean: (sum / s.len() as u128) as u64,
        max: s[s.len() - 1],
    })
}

impl LoopStats {
    pub fn new(requested: u64) -> LoopStats {
        LoopStats {
            requested,
            ..Default::default()
        }
    }

    pub fn record(&mut self, ns: u64, result: Result<(), i32>) {
        self.samples.push(ns);
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                if self.first_errno == 0 {
                    self.first_errno = e;
                }
                *self.errors.entry(e).or_insert(0) += 1;
            }
        }
    }

    pub fn attempted(&self) -> u64 {
        self.samples.len() as u64
    }

    pub fn all_ok(&self) -> bool {
        self.stopped_early.is_none() && self.ok == self.requested
    }

    /// The errno that characterizes a failed run: EPERM/EACCES if any, else the first error.
    pub fn main_errno(&self) -> i32 {
        for e in [libc::EPERM, libc::EACCES] {
            if self.errors.contains_key(&e) {
                return e;
            }
        }
        self.first_errno
    }

    /// Extra JSON fields: (key, encoded value).
    pub fn json_fields(&self) -> Vec<(String, String)> {
        let mut f = vec![
            ("count".to_string(), self.requested.to_string()),
            ("attempted".to_string(), self.attempted().to_string()),
            ("ok_count".to_string(), self.ok.to_string()),
        ];
        let errs: Vec<String> = self
            .errors
            .iter()
            .map(|(e, n)| format!("{}:{}", quote(&errno_name(*e)), n))
            .collect();
        f.push(("errors".to_string(), format!("{{{}}}", errs.join(","))));
        let sum = summarize(&self.samples);
        let g = |v: Option<u64>| {
            v.map(|x| x.to_string())
                .unwrap_or_else(|| "null".to_string())
        };
        f.push(("min_ns".to_string(), g(sum.as_ref().map(|s| s.min))));
        f.push(("median_ns".to_string(), g(sum.as_ref().map(|s| s.median))));
        f.push(("p90_ns".to_string(), g(sum.as_ref().map(|s| s.p90))));
        f.push(("p99_ns".to_string(), g(sum.as_ref().map(|s| s.p99))));
        f.push(("mean_ns".to_string(), g(sum.as_ref().map(|s| s.mean))));
        f.push(("max_ns".to_string(), g(sum.as_ref().map(|s| s.max))));
        f.push((
            "stopped_early".to_string(),
            match &self.stopped_early {
                Some(r) => quote(r),
                None => "null".to_string(),
            },
        ));
        f
    }
}

/// CLOCK_MONOTONIC in ns.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        let s = summarize(&v).unwrap();
        assert_eq!(
            s,
            Summary {
                min: 1,
                median: 50,
                p90: 90,
                p99: 99,
                mean: 50,
                max: 100
            }
        );
        let one = summarize(&[7]).unwrap();
        assert_eq!((one.min, one.median, one.p99), (7, 7, 7));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn record_and_json() {
        let mut st = LoopStats::new(3);
        st.record(10, Ok(()));
        st.record(20, Err(libc::EPERM));
        st.record(30, Err(libc::EPERM));
        assert!(!st.all_ok());
        assert_eq!(st.main_errno(), libc::EPERM);
        let f = st.json_fields();
        let m: std::collections::HashMap<_, _> = f.into_iter().collect();
        assert_eq!(m["errors"], "{\"EPERM\":2}");
        assert_eq!(m["ok_count"], "1");
        assert_eq!(m["median_ns"], "20");
    }
}
