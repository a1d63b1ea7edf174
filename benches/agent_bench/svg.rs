//! A tiny SVG line-plot emitter: panels side by side, one series each, a
//! shared y axis scale so the panels can be compared by eye. No dependency.

use std::fmt::Write;

/// One panel: a titled line plot.
pub struct Panel {
    /// Title above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// The lines drawn, with a legend when there are several.
    pub series: Vec<Series>,
}

/// One line of a panel.
pub struct Series {
    /// What the line is, for the legend.
    pub label: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Stroke colour, e.g. "#d62728".
    pub color: &'static str,
}

const PANEL_W: f64 = 440.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 25.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;

/// Renders `panels` side by side under `title`.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len() as f64;
    let y_max = nice_max(
        panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|l| l.points.iter().map(|q| q.1)))
            .fold(0.0, f64::max),
    );
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, i as f64 * PANEL_W, y_max);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, p: &Panel, x0: f64, y_max: f64) {
    let (left, right) = (x0 + LEFT, x0 + PANEL_W - RIGHT);
    let (top, bottom) = (TOP, HEIGHT - BOTTOM);
    let x_max = nice_max(
        p.series
            .iter()
            .flat_map(|l| l.points.iter().map(|q| q.0))
            .fold(0.0, f64::max),
    );
    let px = |x: f64| left + x / x_max * (right - left);
    let py = |y: f64| bottom - y / y_max * (bottom - top);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="44" text-anchor="middle" font-size="13">{}</text>"#,
        (left + right) / 2.0,
        esc(&p.title)
    );
    // Grid and ticks.
    for k in 0..=5 {
        let y = y_max * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            py(y),
            left - 6.0,
            py(y) + 4.0,
            tick(y)
        );
        let x = x_max * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{bottom}" x2="{0:.1}" y2="{1}" stroke="#999"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            px(x),
            bottom + 5.0,
            bottom + 18.0,
            tick(x)
        );
    }
    let _ = writeln!(
        s,
        r##"<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        HEIGHT - 18.0,
        esc(&p.x_label)
    );
    let (ly, lx) = ((top + bottom) / 2.0, x0 + 18.0);
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        esc(&p.y_label)
    );
    // The series, with each value written next to its point, and a legend
    // in the top left corner when there is more than one.
    for (k, line) in p.series.iter().enumerate() {
        if p.series.len() > 1 {
            let y = top + 14.0 + 16.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{3}" stroke-width="2.5"/><text x="{4:.1}" y="{5:.1}">{6}</text>"#,
                left + 10.0,
                y,
                left + 30.0,
                line.color,
                left + 36.0,
                y + 4.0,
                esc(&line.label)
            );
        }
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
            pts.join(" "),
            line.color
        );
        for (i, &(x, y)) in line.points.iter().enumerate() {
            // The first label right of its point, clear of the y axis; the
            // others left of theirs, above the segment that comes from the
            // left. A white halo keeps a label readable where a line
            // crosses it.
            let (lx, anchor) = if i == 0 {
                (px(x) + 7.0, "start")
            } else {
                (px(x) - 7.0, "end")
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{0:.1}" cy="{1:.1}" r="4" fill="{2}"/><text x="{lx:.1}" y="{3:.1}" text-anchor="{anchor}" fill="{2}" stroke="white" stroke-width="4" paint-order="stroke">{4}</text>"#,
                px(x),
                py(y),
                line.color,
                py(y) - 7.0,
                tick(y)
            );
        }
    }
}

/// The smallest "round" number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k)
/// at or above `v`, so that fifths of it make readable ticks (1 for nothing).
fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

/// A tick label: integers plainly, small values with up to two decimals.
fn tick(v: f64) -> String {
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
