//! `runs metrics`: a run's steps as a table, and its loss curve as a standalone SVG document.

use std::fmt::Write as _;

use adapterci_api::{RunMetricsResponse, StepMetricsSource};

use crate::output::Style;
use crate::render::{Cell, number, table};

/// One row per step: loss, learning rate, tokens and tokens per second (`-` where the run did not record it).
pub fn metrics_table(metrics: &RunMetricsResponse, style: Style) -> String {
    if metrics.steps.is_empty() {
        return format!("run {} has no training steps yet", metrics.run_id);
    }
    let rows = metrics
        .steps
        .iter()
        .map(|step| {
            vec![
                Cell::from(step.step.to_string()),
                Cell::from(number(step.loss)),
                Cell::from(step.learning_rate.map_or_else(|| "-".to_string(), |rate| format!("{rate:.3e}"))),
                Cell::from(step.tokens.map_or_else(|| "-".to_string(), |tokens| tokens.to_string())),
                Cell::from(step.tokens_per_second().map_or_else(|| "-".to_string(), |rate| format!("{rate:.1}"))),
            ]
        })
        .collect();
    let mut text = table(&["step", "loss", "lr", "tokens", "tokens/s"], rows, style);
    if metrics.source == StepMetricsSource::Report {
        text.push_str("\n(only the loss was recorded for this run)");
    }
    text
}

const SVG_WIDTH: f64 = 640.0;
const SVG_HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 32.0;
const MARGIN_BOTTOM: f64 = 44.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart of `(step, loss)` as a standalone SVG document, titled `title`. Non-finite losses are left
/// out; with no finite point the picture says so instead of drawing a line.
pub fn loss_curve_svg(title: &str, points: &[(u64, f64)]) -> String {
    let finite: Vec<(u64, f64)> = points.iter().copied().filter(|(_, loss)| loss.is_finite()).collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{SVG_HEIGHT}\" \
         viewBox=\"0 0 {SVG_WIDTH} {SVG_HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        SVG_WIDTH / 2.0,
        escape(title)
    );
    let (plot_width, plot_height) = (SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT, SVG_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM);
    let _ = writeln!(
        svg,
        "<rect x=\"{MARGIN_LEFT}\" y=\"{MARGIN_TOP}\" width=\"{plot_width}\" height=\"{plot_height}\" \
         fill=\"none\" stroke=\"#888\"/>"
    );
    if finite.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no training steps recorded</text>\n</svg>",
            SVG_WIDTH / 2.0,
            SVG_HEIGHT / 2.0
        );
        return svg;
    }
    let (first_step, last_step) = (finite[0].0, finite[finite.len() - 1].0);
    let low = finite.iter().map(|(_, loss)| *loss).fold(f64::INFINITY, f64::min);
    let high = finite.iter().map(|(_, loss)| *loss).fold(f64::NEG_INFINITY, f64::max);
    let step_span = (last_step.saturating_sub(first_step)).max(1) as f64;
    let loss_span = if high > low { high - low } else { 1.0 };
    let x = |step: u64| MARGIN_LEFT + (step.saturating_sub(first_step)) as f64 / step_span * plot_width;
    let y = |loss: f64| MARGIN_TOP + (high - loss) / loss_span * plot_height;
    let coordinates: Vec<String> =
        finite.iter().map(|&(step, loss)| format!("{:.1},{:.1}", x(step), y(loss))).collect();
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
        coordinates.join(" ")
    );
    let bottom = MARGIN_TOP + plot_height;
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{high:.4}</text>\n\
         <text x=\"{}\" y=\"{bottom}\" text-anchor=\"end\">{low:.4}</text>\n\
         <text x=\"{MARGIN_LEFT}\" y=\"{}\" text-anchor=\"start\">{first_step}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{last_step}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">loss</text>\n</svg>\n",
        MARGIN_LEFT - 6.0,
        MARGIN_TOP + 10.0,
        MARGIN_LEFT - 6.0,
        bottom + 16.0,
        MARGIN_LEFT + plot_width,
        bottom + 16.0,
        MARGIN_LEFT + plot_width / 2.0,
        bottom + 34.0,
        MARGIN_TOP + plot_height / 2.0,
        MARGIN_TOP + plot_height / 2.0,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polyline_points(svg: &str) -> Vec<(f64, f64)> {
        let start = svg.find("points=\"").map(|at| at + 8).unwrap_or_default();
        let end = start + svg[start..].find('"').unwrap_or_default();
        svg[start..end]
            .split(' ')
            .filter_map(|pair| pair.split_once(','))
            .map(|(x, y)| (x.parse().unwrap_or(f64::NAN), y.parse().unwrap_or(f64::NAN)))
            .collect()
    }

    #[test]
    fn the_table_shows_every_step_and_says_when_only_the_loss_is_known() {
        use adapterci_api::StepMetricInfo;
        let step = |step: u64, tokens: Option<u64>| StepMetricInfo {
            step,
            loss: Some(1.0 / step as f64),
            learning_rate: tokens.map(|_| 2e-4),
            tokens,
            seconds: tokens.map(|_| 2.0),
        };
        let full = RunMetricsResponse {
            run_id: "r-1".into(),
            source: StepMetricsSource::Steps,
            steps: vec![step(1, Some(512)), step(2, Some(400))],
        };
        let text = metrics_table(&full, Style::PLAIN);
        assert!(text.contains("2.000e-4") && text.contains("256.0") && text.contains("0.5000"), "{text}");
        let report = RunMetricsResponse { source: StepMetricsSource::Report, steps: vec![step(1, None)], ..full };
        assert!(metrics_table(&report, Style::PLAIN).ends_with("(only the loss was recorded for this run)"));
        let empty = RunMetricsResponse { steps: Vec::new(), ..report };
        assert_eq!(metrics_table(&empty, Style::PLAIN), "run r-1 has no training steps yet");
    }

    #[test]
    fn the_curve_has_one_point_per_finite_step_with_lower_loss_drawn_lower() {
        let svg = loss_curve_svg("run <1>", &[(1, 2.0), (2, 1.0), (3, f64::NAN), (4, 0.5)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("run &lt;1&gt;"), "the title is escaped");
        let points = polyline_points(&svg);
        assert_eq!(points.len(), 3, "{svg}");
        assert_eq!(points[0], (MARGIN_LEFT, MARGIN_TOP), "the first, highest loss is at the top left");
        assert!(points[1].1 > points[0].1 && points[2].1 > points[1].1, "a falling loss goes down the picture");
        assert_eq!(points[2].0, SVG_WIDTH - MARGIN_RIGHT, "the last step is at the right edge");
    }

    #[test]
    fn a_run_without_steps_says_so() {
        let svg = loss_curve_svg("empty", &[]);
        assert!(svg.contains("no training steps recorded") && !svg.contains("polyline"), "{svg}");
        let flat = loss_curve_svg("flat", &[(1, 1.0)]);
        assert_eq!(polyline_points(&flat).len(), 1);
    }
}
