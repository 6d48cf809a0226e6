//! Horizontal grouped bar charts as standalone SVG (no plotting crate).

pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One group of bars per category, one bar per series; `reference` draws a
/// dashed vertical line (e.g. ratio 1.0 = no filter).
pub fn hbar(
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[Series],
    reference: Option<f64>,
) -> String {
    let (left, right, top, bar_h, gap) = (230.0, 90.0, 50.0, 14.0, 10.0);
    let width = 860.0;
    let plot_w = width - left - right;
    let group_h = bar_h * series.len() as f64 + gap;
    let height = top + group_h * categories.len() as f64 + 40.0 + 18.0 * series.len() as f64;
    let vals = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .chain(reference)
    };
    // The axis spans 0 and every value (negative values grow leftwards).
    let max = vals().fold(0.0f64, f64::max);
    let min = vals().fold(0.0f64, f64::min);
    let pad = ((max - min) * 0.08).max(1e-9);
    let (lo, hi) = (if min < 0.0 { min - pad } else { 0.0 }, max + pad);
    let x = |v: f64| left + plot_w * (v - lo) / (hi - lo);
    let zero = x(0.0);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height:.0}\" viewBox=\"0 0 {width} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" font-size=\"15\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>\n",
        width / 2.0,
        esc(title)
    );
    for (ci, c) in categories.iter().enumerate() {
        let y0 = top + group_h * ci as f64;
        o += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y0 + group_h / 2.0,
            esc(c)
        );
        for (si, s) in series.iter().enumerate() {
            let y = y0 + bar_h * si as f64;
            match s.values.get(ci).copied().flatten() {
                Some(v) => {
                    let (a, b) = (zero.min(x(v)), zero.max(x(v)));
                    o += &format!(
                        "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
                        (b - a).max(0.5),
                        bar_h - 2.0,
                        COLORS[si % COLORS.len()],
                        b + 4.0,
                        y + bar_h - 4.0,
                        fmt_val(v, unit)
                    );
                }
                None => {
                    o += &format!(
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#888\">n/a</text>\n",
                        left + 4.0,
                        y + bar_h - 4.0
                    );
                }
            }
        }
    }
    let bottom = top + group_h * categories.len() as f64;
    o += &format!(
        "<line x1=\"{zero:.1}\" y1=\"{top}\" x2=\"{zero:.1}\" y2=\"{bottom:.1}\" stroke=\"black\"/>\n"
    );
    if let Some(r) = reference {
        o += &format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"#555\" stroke-dasharray=\"4,3\"/>\n",
            x(r)
        );
    }
    for (si, s) in series.iter().enumerate() {
        let y = bottom + 24.0 + 18.0 * si as f64;
        o += &format!(
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n<text x=\"{}\" y=\"{:.1}\">{}</text>\n",
            y - 10.0,
            COLORS[si % COLORS.len()],
            left + 18.0,
            y,
            esc(&s.name)
        );
    }
    o += "</svg>\n";
    o
}

fn fmt_val(v: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{v:.2}x"),
        "ns" => format!("{v:.0} ns"),
        "us" => format!("{v:.1} µs"),
        "%" => format!("{v:+.1}%"),
        "conn/s" => format!("{v:.0}/s"),
        u => format!("{v:.2} {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_bars_labels_and_gaps() {
        let s = hbar(
            "t <1>",
            "x",
            &["a".into(), "b".into()],
            &[Series {
                name: "ratio".into(),
                values: vec![Some(1.5), None],
            }],
            Some(1.0),
        );
        let neg = hbar(
            "t",
            "%",
            &["a".into()],
            &[Series {
                name: "overhead".into(),
                values: vec![Some(-5.0)],
            }],
            Some(0.0),
        );
        assert!(neg.contains("-5.0%"));
        assert!(s.starts_with("<svg"));
        assert!(s.contains("t &lt;1&gt;"));
        assert!(s.contains("1.50x"));
        assert!(s.contains("n/a"));
        assert!(s.contains("stroke-dasharray"));
        assert!(s.trim_end().ends_with("</svg>"));
    }
}
