//! Bar charts as server-side SVG, each with a table of its numbers for
//! screen readers and for copying.

use maud::{Markup, html};

/// The widest a column chart's SVG is drawn (its viewBox units are CSS
/// pixels at that width, so its text stays legible in a grid cell).
const COLUMNS_W: f64 = 460.0;
/// At most this many labels under the bars (the rest are in each bar's
/// tooltip and in the table).
const MAX_TICKS: usize = 6;

/// Every how many bars a label is drawn under `n` bars.
fn tick_every(n: usize) -> usize {
    n.div_ceil(MAX_TICKS).max(1)
}

/// A bar's label under the axis: a day (`2026-11-24`) as `11-24`.
fn short(label: &str) -> &str {
    let b = label.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        &label[5..]
    } else {
        label
    }
}

/// A vertical bar chart of `points` (label, value), labelled `title`.
pub fn columns(title: &str, points: &[(String, f64)], show: fn(f64) -> String) -> Markup {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let n = points.len().max(1) as f64;
    let (left, right, top, bottom) = (64.0, COLUMNS_W - 8.0, 12.0, 170.0);
    let slot = (right - left) / n;
    let bar = (slot * 0.7).max(1.0);
    let y = |v: f64| {
        if max > 0.0 {
            bottom - (bottom - top) * v / max
        } else {
            bottom
        }
    };
    let every = tick_every(points.len());
    html! {
        figure.chart.columns {
            figcaption { strong { (title) } }
            svg viewBox={ "0 0 " (COLUMNS_W) " 196" } role="img" aria-label={ (title) ", " (points.len()) " bars, the largest " (show(max)) } {
                line x1=(left) x2=(right) y1=(bottom) y2=(bottom) {}
                text.tick x=(left - 4.0) y=(top + 8.0) text-anchor="end" { (show(max)) }
                text.tick x=(left - 4.0) y=(bottom) text-anchor="end" { "0" }
                @for (i, (label, v)) in points.iter().enumerate() {
                    @let x = left + slot * i as f64 + (slot - bar) / 2.0;
                    rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", y(*v)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", bottom - y(*v))) {
                        title { (label) ": " (show(*v)) }
                    }
                    @if i % every == 0 {
                        text.tick x=(format!("{:.1}", x + bar / 2.0)) y=(bottom + 18.0) text-anchor="middle" { (short(label)) }
                    }
                }
            }
            (numbers(title, points, show))
        }
    }
}

/// A horizontal bar chart of `points` (label, value).
pub fn rows(title: &str, points: &[(String, f64)], show: fn(f64) -> String) -> Markup {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let (left, right, row) = (130.0, COLUMNS_W - 70.0, 22.0);
    let height = row * points.len().max(1) as f64 + 6.0;
    let w = |v: f64| {
        if max > 0.0 {
            ((right - left) * v / max).max(1.0)
        } else {
            1.0
        }
    };
    html! {
        figure.chart.columns {
            figcaption { strong { (title) } }
            svg viewBox={ "0 0 " (COLUMNS_W) " " (height) } role="img" aria-label={ (title) ", " (points.len()) " bars" } {
                @for (i, (label, v)) in points.iter().enumerate() {
                    @let y = row * i as f64 + 4.0;
                    text x="4" y=(y + 13.0) { (super::fmt::clip(label, 18)) }
                    rect.bar x=(left) y=(y) width=(format!("{:.1}", w(*v))) height="15" rx="2" {
                        title { (label) ": " (show(*v)) }
                    }
                    text.tick x=(format!("{:.1}", left + w(*v) + 6.0)) y=(y + 12.0) { (show(*v)) }
                }
            }
            (numbers(title, points, show))
        }
    }
}

/// A stacked column chart: for each label, one bar per series on top of
/// each other (each series a class `stack-<name>` for its color), with a
/// legend and the numbers.
pub fn stacked(title: &str, labels: &[String], series: &[(&str, Vec<f64>)]) -> Markup {
    let total = |i: usize| {
        series
            .iter()
            .map(|(_, v)| v.get(i).copied().unwrap_or(0.0))
            .sum::<f64>()
    };
    let max = (0..labels.len()).map(total).fold(0.0_f64, f64::max);
    let n = labels.len().max(1) as f64;
    let (left, right, top, bottom) = (50.0, 890.0, 10.0, 200.0);
    let slot = (right - left) / n;
    let bar = (slot * 0.7).max(1.0);
    let h = |v: f64| {
        if max > 0.0 {
            (bottom - top) * v / max
        } else {
            0.0
        }
    };
    let every = (labels.len() / 12).max(1);
    let rows: Vec<(String, f64)> = series
        .iter()
        .map(|(name, v)| (name.to_string(), v.iter().sum()))
        .collect();
    html! {
        figure.chart {
            figcaption { strong { (title) } }
            div.legend aria-hidden="true" {
                @for (name, _) in series { span class={ "k-stack-" (name) } { (name) } }
            }
            svg viewBox="0 0 900 230" role="img" aria-label={ (title) ", " (labels.len()) " stacked bars, the tallest " (max) } {
                line x1=(left) x2=(right) y1=(bottom) y2=(bottom) {}
                text.tick x=(left - 4.0) y=(top + 8.0) text-anchor="end" { (max) }
                text.tick x=(left - 4.0) y=(bottom) text-anchor="end" { "0" }
                @for (i, label) in labels.iter().enumerate() {
                    @let x = left + slot * i as f64 + (slot - bar) / 2.0;
                    @let mut base = bottom;
                    @for (name, v) in series {
                        @let v = v.get(i).copied().unwrap_or(0.0);
                        @if v > 0.0 {
                            @let y = { base -= h(v); base };
                            rect class={ "stack-" (name) } x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                                width=(format!("{bar:.1}")) height=(format!("{:.1}", h(v))) {
                                title { (label) " " (name) ": " (v) }
                            }
                        }
                    }
                    @if i % every == 0 {
                        text.tick x=(format!("{:.1}", x + bar / 2.0)) y=(bottom + 16.0) text-anchor="middle" { (label) }
                    }
                }
            }
            (numbers(title, &rows, |v| v.to_string()))
        }
    }
}

fn numbers(title: &str, points: &[(String, f64)], show: fn(f64) -> String) -> Markup {
    html! {
        details {
            summary { "Numbers" }
            table {
                caption.skip { (title) }
                tbody { @for (label, v) in points { tr { th scope="row" { (label) } td.num { (show(*v)) } } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_bar_per_point_and_escapes_labels() {
        let points = vec![("<b>".to_string(), 2.0), ("b".to_string(), 0.0)];
        let svg = columns("Tokens", &points, |v| v.to_string()).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        let svg = rows("Runs", &points, |v| v.to_string()).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        let labels = vec!["10:00".to_string(), "10:01".to_string()];
        let series = [("succeeded", vec![2.0, 0.0]), ("failed", vec![1.0, 3.0])];
        let svg = stacked("Runs", &labels, &series).into_string();
        // No bar for a zero.
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("stack-failed"));
    }
}
