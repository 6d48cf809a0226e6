//! The harness's statistics: medians, per-round paired ratios, and the
//! run-to-run stability check. Kept free of I/O so it is unit tested.

/// Median of `v` (mean of the two middle values for an even count); NaN
/// values are ignored; `None` when nothing is left.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN left"));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Median of integer samples (ns), as f64.
pub fn median_u64(v: &[u64]) -> Option<f64> {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    median(&f)
}

/// Per-round ratios `a[i] / b[i]` (rounds where both were measured and `b`
/// is positive), then their median: the baseline measured in the same round
/// cancels slow drift of the machine.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| !x.is_nan() && !y.is_nan() && **y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    median(&r)
}

/// Relative difference of two runs' figures, |a - b| / min(a, b).
pub fn relative_change(a: f64, b: f64) -> f64 {
    let lo = a.min(b);
    if lo <= 0.0 {
        return f64::INFINITY;
    }
    (a - b).abs() / lo
}

/// Per-run average between two (run_time_ns, run_count) readings of a BPF
/// program; `None` when the program did not run.
pub fn per_run(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let runs = after.1.checked_sub(before.1)?;
    let ns = after.0.checked_sub(before.0)?;
    (runs > 0).then(|| ns as f64 / runs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0, 4.0]), Some(3.0));
        assert_eq!(median_u64(&[10, 30, 20]), Some(20.0));
    }

    #[test]
    fn paired_ratios_cancel_drift() {
        // The machine slows down 2x over the rounds; the filter costs 10%.
        let base = [100.0, 150.0, 200.0];
        let with = [110.0, 165.0, 220.0];
        let r = paired_ratio(&with, &base).unwrap();
        assert!((r - 1.1).abs() < 1e-9, "{r}");
        // Unpaired medians would see the same here, but a missing round
        // (NaN) or a zero baseline is skipped, not divided by.
        let r = paired_ratio(&[110.0, f64::NAN, 50.0], &[100.0, 150.0, 0.0]).unwrap();
        assert!((r - 1.1).abs() < 1e-9, "{r}");
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None);
    }

    #[test]
    fn stability_and_per_run() {
        assert!((relative_change(1.0, 1.05) - 0.05).abs() < 1e-9);
        assert!((relative_change(1.05, 1.0) - 0.05).abs() < 1e-9);
        assert!(relative_change(0.0, 1.0).is_infinite());
        assert_eq!(per_run((100, 10), (400, 13)), Some(100.0));
        assert_eq!(per_run((100, 10), (100, 10)), None);
        assert_eq!(per_run((100, 10), (50, 12)), None);
    }
}
