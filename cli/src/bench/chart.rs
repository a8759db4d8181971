//! An SVG bar chart of throughput by case, plaintext next to sealed,
//! generated from the measured results.

use std::fmt::Write;

use super::worker::Mode;
use super::CaseResult;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_BOTTOM: f64 = 70.0;
const MARGIN_TOP: f64 = 40.0;
const PLAIN_COLOR: &str = "#8da0cb";
const SEALED_COLOR: &str = "#fc8d62";

/// Renders the chart.
pub fn throughput_svg(results: &[CaseResult]) -> String {
    let groups: Vec<(&CaseResult, Option<&CaseResult>)> = results
        .iter()
        .filter(|result| result.mode == Mode::Plain)
        .map(|plain| {
            let sealed = results.iter().find(|sealed| {
                sealed.mode == Mode::Sealed
                    && sealed.broker == plain.broker
                    && sealed.qos == plain.qos
                    && sealed.subscribers == plain.subscribers
            });
            (plain, sealed)
        })
        .collect();
    let max = results
        .iter()
        .map(|result| result.msgs_per_s)
        .fold(1.0, f64::max)
        * 1.1;
    let plot_width = WIDTH - MARGIN_LEFT - 20.0;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let group_width = plot_width / groups.len().max(1) as f64;
    let bar_width = group_width * 0.35;
    let y = |value: f64| MARGIN_TOP + plot_height * (1.0 - value / max);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" font-size="14" text-anchor="middle">End-to-end throughput, messages per second per subscriber (plaintext vs sealed)</text>"#,
        WIDTH / 2.0
    );
    for step in 0..=4 {
        let value = max * step as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{value:.0}</text>"##,
            WIDTH - 20.0,
            MARGIN_LEFT - 5.0,
            y(value) + 4.0,
            y = y(value)
        );
    }
    for (index, (plain, sealed)) in groups.iter().enumerate() {
        let left = MARGIN_LEFT + group_width * index as f64 + group_width * 0.12;
        for (offset, result, color) in [
            (0.0, Some(*plain), PLAIN_COLOR),
            (bar_width, *sealed, SEALED_COLOR),
        ] {
            if let Some(result) = result {
                let top = y(result.msgs_per_s);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{bar_width:.1}" height="{:.1}" fill="{color}"><title>{:.0} msgs/s</title></rect>"#,
                    left + offset,
                    MARGIN_TOP + plot_height - top,
                    result.msgs_per_s
                );
            }
        }
        let label = if plain.broker == "redis" {
            format!("redis, {} sub", plain.subscribers)
        } else {
            format!("mqtt qos{}, {} sub", plain.qos, plain.subscribers)
        };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            left + bar_width,
            HEIGHT - MARGIN_BOTTOM + 16.0
        );
        if let Some(ratio) = sealed.and_then(|sealed| sealed.throughput_ratio) {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">ratio {ratio:.2}</text>"#,
                left + bar_width,
                HEIGHT - MARGIN_BOTTOM + 30.0
            );
        }
    }
    let legend_y = HEIGHT - 18.0;
    let _ = writeln!(
        svg,
        r#"<rect x="{MARGIN_LEFT}" y="{}" width="12" height="12" fill="{PLAIN_COLOR}"/><text x="{}" y="{legend_y}">plaintext EdgeX JSON</text>"#,
        legend_y - 10.0,
        MARGIN_LEFT + 16.0
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{}" y="{}" width="12" height="12" fill="{SEALED_COLOR}"/><text x="{}" y="{legend_y}">sealed</text>"#,
        MARGIN_LEFT + 170.0,
        legend_y - 10.0,
        MARGIN_LEFT + 186.0
    );
    svg.push_str("</svg>\n");
    svg
}
