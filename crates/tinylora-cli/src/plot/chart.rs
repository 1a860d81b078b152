//! Training curves: reward (and each reward of a weighted sum), accuracy and response length
//! over steps, one line per run (e.g. GRPO against SFT), from metrics JSONL files.
//!
//! [`Chart::layout`] places everything once (frames, labels, polylines, legend) in pixel
//! coordinates; [`super::svg`] and [`super::png`] only draw those shapes.

use tinylora_train::StepMetrics;

/// One run to draw: a label and its metrics in step order.
#[derive(Debug, Clone)]
pub struct Run {
    /// Legend label (usually the file name).
    pub label: String,
    /// The metrics lines.
    pub metrics: Vec<StepMetrics>,
}

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Horizontal alignment of a label relative to its anchor point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The text starts at the point.
    Start,
    /// The text is centred on the point.
    Middle,
    /// The text ends at the point.
    End,
}

/// One thing to draw, in pixels from the top-left corner.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An unfilled grey rectangle (a panel's frame).
    Frame {
        /// Left edge.
        x: f64,
        /// Top edge.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
    },
    /// A filled rectangle (a legend swatch).
    Swatch {
        /// Left edge.
        x: f64,
        /// Top edge.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
        /// Fill colour.
        colour: Rgb,
    },
    /// A line of text whose baseline passes through `y`.
    Label {
        /// Anchor x.
        x: f64,
        /// Baseline y.
        y: f64,
        /// Alignment relative to `x`.
        anchor: Anchor,
        /// The text.
        text: String,
    },
    /// A run's curve in one panel.
    Curve {
        /// The points, left to right.
        points: Vec<(f64, f64)>,
        /// Stroke colour.
        colour: Rgb,
    },
}

/// A laid-out chart: its size and shapes.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Width in pixels.
    pub width: f64,
    /// Height in pixels.
    pub height: f64,
    /// Shapes in drawing order.
    pub shapes: Vec<Shape>,
}

/// A panel: its title and the value it draws from a metrics line (if the line has it).
type Panel = (String, Box<dyn Fn(&StepMetrics) -> Option<f64>>);

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 220.0;
const MARGIN: f64 = 48.0;
/// Line colours of the runs, in order (matplotlib's first six).
pub const COLOURS: [Rgb; 6] = [
    [0x1f, 0x77, 0xb4],
    [0xd6, 0x27, 0x28],
    [0x2c, 0xa0, 0x2c],
    [0xff, 0x7f, 0x0e],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
];

impl Chart {
    /// Panels over steps (reward mean; each reward's mean when a run sums several; accuracy;
    /// response length) and a legend.
    pub fn layout(runs: &[Run]) -> Chart {
        let mut panels: Vec<Panel> = vec![("mean reward".into(), Box::new(|m| Some(m.reward_mean as f64)))];
        let mut components: Vec<String> = runs
            .iter()
            .flat_map(|r| r.metrics.iter())
            .filter(|m| m.rewards.len() > 1)
            .flat_map(|m| m.rewards.keys().cloned())
            .collect();
        components.sort();
        components.dedup();
        for name in components {
            let key = name.clone();
            panels.push((
                format!("reward: {name}"),
                Box::new(move |m| m.rewards.get(&key).map(|&v| v as f64)),
            ));
        }
        panels.push(("accuracy".into(), Box::new(|m| Some(m.accuracy as f64))));
        panels.push((
            "response length (tokens)".into(),
            Box::new(|m| Some(m.response_len as f64)),
        ));
        let max_step = runs
            .iter()
            .flat_map(|r| r.metrics.iter().map(|m| m.step))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut shapes = Vec::new();
        let label = |x, y, anchor, text: String| Shape::Label { x, y, anchor, text };
        for (p, (title, value)) in panels.iter().enumerate() {
            let x0 = MARGIN + p as f64 * (PANEL_W + MARGIN);
            let y0 = MARGIN;
            let values: Vec<f64> = runs
                .iter()
                .flat_map(|r| r.metrics.iter().filter_map(value))
                .collect();
            let lo = values.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
            let mut hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if !hi.is_finite() || hi <= lo {
                hi = lo + 1.0;
            }
            shapes.push(Shape::Frame {
                x: x0,
                y: y0,
                w: PANEL_W,
                h: PANEL_H,
            });
            shapes.push(label(x0 + PANEL_W / 2.0, y0 - 8.0, Anchor::Middle, title.clone()));
            shapes.push(label(x0 - 4.0, y0 + 10.0, Anchor::End, format!("{hi:.3}")));
            shapes.push(label(x0 - 4.0, y0 + PANEL_H, Anchor::End, format!("{lo:.3}")));
            let below = y0 + PANEL_H + 16.0;
            shapes.push(label(x0 + PANEL_W / 2.0, below, Anchor::Middle, "step".into()));
            shapes.push(label(x0 + PANEL_W, below, Anchor::End, format!("{max_step}")));
            for (i, run) in runs.iter().enumerate() {
                let points = run
                    .metrics
                    .iter()
                    .filter_map(|m| {
                        let x = x0 + PANEL_W * m.step as f64 / max_step;
                        let y = y0 + PANEL_H * (1.0 - (value(m)? - lo) / (hi - lo));
                        Some((x, y))
                    })
                    .collect();
                shapes.push(Shape::Curve {
                    points,
                    colour: COLOURS[i % COLOURS.len()],
                });
            }
        }
        for (i, run) in runs.iter().enumerate() {
            let y = PANEL_H + 2.0 * MARGIN + 20.0 * i as f64;
            let colour = COLOURS[i % COLOURS.len()];
            shapes.push(Shape::Swatch {
                x: MARGIN,
                y: y - 4.0,
                w: 14.0,
                h: 4.0,
                colour,
            });
            shapes.push(label(MARGIN + 20.0, y, Anchor::Start, run.label.clone()));
        }
        Chart {
            width: panels.len() as f64 * (PANEL_W + MARGIN) + MARGIN,
            height: PANEL_H + 2.0 * MARGIN + 20.0 * runs.len() as f64,
            shapes,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn metrics(step: usize, reward: f32) -> StepMetrics {
        StepMetrics {
            step,
            reward_mean: reward,
            accuracy: reward,
            response_len: 10.0,
            ..StepMetrics::default()
        }
    }

    /// Two runs: "grpo <a>" rising from reward 0 to 1 over steps 1–2, "sft" at 0.5 on step 1.
    pub(crate) fn two_runs() -> [Run; 2] {
        [
            Run {
                label: "grpo <a>".into(),
                metrics: vec![metrics(1, 0.0), metrics(2, 1.0)],
            },
            Run {
                label: "sft".into(),
                metrics: vec![metrics(1, 0.5)],
            },
        ]
    }

    /// The pixel where the first run's last reward point must land: step 2 of 2 at the right
    /// edge of panel 1, reward 1 (the maximum) at its top.
    pub(crate) const GRPO_LAST_REWARD: (f64, f64) = (MARGIN + PANEL_W, MARGIN);

    #[test]
    fn one_curve_per_run_and_panel_with_scaled_points() {
        let chart = Chart::layout(&two_runs());
        let curves: Vec<_> = chart
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Curve { points, colour } => Some((points, *colour)),
                _ => None,
            })
            .collect();
        assert_eq!(curves.len(), 6);
        assert_eq!(curves[0].0.last(), Some(&GRPO_LAST_REWARD));
        assert_eq!(curves[0].1, COLOURS[0]);
        assert_eq!(curves[1].1, COLOURS[1]);
        // sft's single reward 0.5 sits halfway down the panel (range 0..1)
        assert_eq!(curves[1].0[0].1, MARGIN + PANEL_H / 2.0);
    }

    #[test]
    fn a_panel_per_reward_when_a_run_sums_several() {
        let mut m = metrics(1, 0.6);
        m.rewards = [("correct".to_string(), 0.5), ("format".to_string(), 0.75)].into();
        let chart = Chart::layout(&[Run {
            label: "grpo".into(),
            metrics: vec![m],
        }]);
        let titles: Vec<&str> = chart
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Label { text, y, .. } if *y == MARGIN - 8.0 => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            titles,
            [
                "mean reward",
                "reward: correct",
                "reward: format",
                "accuracy",
                "response length (tokens)"
            ]
        );
        assert_eq!(chart.width, 5.0 * (PANEL_W + MARGIN) + MARGIN);
        // one reward alone draws no extra panel
        assert_eq!(
            Chart::layout(&two_runs()).width,
            3.0 * (PANEL_W + MARGIN) + MARGIN
        );
    }
}
