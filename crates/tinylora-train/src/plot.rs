//! Training curves as an SVG: reward, accuracy and response length over steps, one line per run
//! (e.g. GRPO against SFT), from metrics JSONL files.

use std::fmt::Write;

use crate::trainer::StepMetrics;

/// One run to draw: a label and its metrics in step order.
#[derive(Debug, Clone)]
pub struct Run {
    /// Legend label (usually the file name).
    pub label: String,
    /// The metrics lines.
    pub metrics: Vec<StepMetrics>,
}

/// A panel: its title and the value it draws from a metrics line.
type Panel = (&'static str, fn(&StepMetrics) -> f64);

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 220.0;
const MARGIN: f64 = 48.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// An SVG with three panels (reward mean, accuracy, response length) over steps.
pub fn render_svg(runs: &[Run]) -> String {
    let panels: [Panel; 3] = [
        ("mean reward", |m| m.reward_mean as f64),
        ("accuracy", |m| m.accuracy as f64),
        ("response length (tokens)", |m| m.response_len as f64),
    ];
    let width = 3.0 * (PANEL_W + MARGIN) + MARGIN;
    let height = PANEL_H + 2.0 * MARGIN + 20.0 * runs.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let max_step = runs
        .iter()
        .flat_map(|r| r.metrics.iter().map(|m| m.step))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for (p, (title, value)) in panels.iter().enumerate() {
        let x0 = MARGIN + p as f64 * (PANEL_W + MARGIN);
        let y0 = MARGIN;
        let values: Vec<f64> = runs.iter().flat_map(|r| r.metrics.iter().map(value)).collect();
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
        let mut hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !hi.is_finite() || hi <= lo {
            hi = lo + 1.0;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{title}</text>"#,
            x0 + PANEL_W / 2.0,
            y0 - 8.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{hi:.3}</text>"#,
            x0 - 4.0,
            y0 + 10.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{lo:.3}</text>"#,
            x0 - 4.0,
            y0 + PANEL_H
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
            x0 + PANEL_W / 2.0,
            y0 + PANEL_H + 16.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{max_step}</text>"#,
            x0 + PANEL_W,
            y0 + PANEL_H + 16.0
        );
        for (i, run) in runs.iter().enumerate() {
            let points: Vec<String> = run
                .metrics
                .iter()
                .map(|m| {
                    let x = x0 + PANEL_W * m.step as f64 / max_step;
                    let y = y0 + PANEL_H * (1.0 - (value(m) - lo) / (hi - lo));
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                points.join(" "),
                COLOURS[i % COLOURS.len()]
            );
        }
    }
    for (i, run) in runs.iter().enumerate() {
        let y = PANEL_H + 2.0 * MARGIN + 20.0 * i as f64;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{MARGIN}" y="{}" width="14" height="4" fill="{colour}"/>"#,
            y - 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{y}">{}</text>"#,
            MARGIN + 20.0,
            escape(&run.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(step: usize, reward: f32) -> StepMetrics {
        StepMetrics {
            step,
            reward_mean: reward,
            reward_std: 0.0,
            accuracy: reward,
            zero_variance_groups: 0.0,
            response_len: 10.0,
            kl: 0.0,
            clipped: 0.0,
            grad_norm: 0.0,
            loss: 0.0,
            lr: 0.0,
            values: vec![],
            rollout_s: 0.0,
            train_s: 0.0,
        }
    }

    #[test]
    fn one_polyline_per_run_and_panel_with_scaled_points() {
        let runs = [
            Run {
                label: "grpo <a>".into(),
                metrics: vec![metrics(1, 0.0), metrics(2, 1.0)],
            },
            Run {
                label: "sft".into(),
                metrics: vec![metrics(1, 0.5)],
            },
        ];
        let svg = render_svg(&runs);
        assert_eq!(svg.matches("<polyline").count(), 6);
        // step 2 of 2 at the right edge, reward 1 (the maximum) at the top of panel 1
        assert!(
            svg.contains(&format!("{:.1},{:.1}", MARGIN + PANEL_W, MARGIN)),
            "{svg}"
        );
        assert!(svg.contains("grpo &lt;a&gt;"));
    }
}
