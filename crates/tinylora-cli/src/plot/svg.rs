//! A [`Chart`] as SVG text.

use std::fmt::Write;

use super::chart::{Anchor, Chart, Rgb, Run, Shape};

/// The chart of `runs` as an SVG document.
pub fn render_svg(runs: &[Run]) -> String {
    let chart = Chart::layout(runs);
    let (width, height) = (chart.width, chart.height);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for shape in &chart.shapes {
        let _ = match shape {
            Shape::Frame { x, y, w, h } => writeln!(
                svg,
                r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##
            ),
            Shape::Swatch { x, y, w, h, colour } => writeln!(
                svg,
                r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{}"/>"#,
                hex(*colour)
            ),
            Shape::Label { x, y, anchor, text } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                writeln!(
                    svg,
                    r#"<text x="{x}" y="{y}" text-anchor="{anchor}">{}</text>"#,
                    escape(text)
                )
            }
            Shape::Curve { points, colour } => {
                let points: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                    points.join(" "),
                    hex(*colour)
                )
            }
        };
    }
    svg.push_str("</svg>\n");
    svg
}

fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::super::chart::tests::{GRPO_LAST_REWARD, two_runs};
    use super::*;

    #[test]
    fn one_polyline_per_curve_with_points_colours_and_escaped_labels() {
        let svg = render_svg(&two_runs());
        assert_eq!(svg.matches("<polyline").count(), 6);
        let (x, y) = GRPO_LAST_REWARD;
        assert!(
            svg.contains(&format!("{x:.1},{y:.1}\" fill=\"none\" stroke=\"#1f77b4\"")),
            "{svg}"
        );
        assert!(svg.contains("grpo &lt;a&gt;"));
        assert!(svg.contains(r##"fill="#d62728""##), "sft's legend swatch");
    }
}
