//! The main chart and the site list's sparklines as SVG geometry, computed on
//! the server so the chart reads without JavaScript (each bucket carries a
//! native `<title>` tooltip; `static/app.js` only adds a nicer one).

use super::view;

pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
const X_LABELS: usize = 6;

/// One bucket of a series: its label as the API writes it and its value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Gridline {
    pub y: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Tick {
    pub x: String,
    pub label: String,
}

/// A bucket's hover area and what it says.
#[derive(Debug, Clone)]
pub struct Hit {
    pub x: String,
    pub width: String,
    pub cx: String,
    pub cy: String,
    pub title: String,
    pub value: String,
    pub previous: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub metric: String,
    pub line: String,
    pub area: String,
    /// The previous period's line, when comparing.
    pub previous_line: Option<String>,
    pub gridlines: Vec<Gridline>,
    pub ticks: Vec<Tick>,
    pub hits: Vec<Hit>,
    pub top: String,
    pub bottom: String,
    pub height: String,
    /// Bucket label and value, for the table behind the chart.
    pub rows: Vec<(String, String)>,
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// "Nov 3", "14:00" or "Nov 2026" from an API bucket label.
pub fn bucket_label(label: &str, long: bool) -> String {
    let date = chrono::NaiveDate::parse_from_str(label.get(..10).unwrap_or(label), "%Y-%m-%d");
    match (label.len() > 10, date) {
        (true, _) => label.get(11..16).unwrap_or(label).to_string(),
        (false, Ok(d)) if long => d.format("%b %Y").to_string(),
        (false, Ok(d)) => d.format("%b %-d").to_string(),
        _ => label.to_string(),
    }
}

pub fn chart(metric: &str, samples: &[Sample], previous: Option<&[Sample]>, months: bool) -> Chart {
    let max = samples
        .iter()
        .chain(previous.unwrap_or(&[]))
        .map(|s| s.value)
        .fold(0.0, f64::max);
    let ceiling = 4.0 * view::nice_step(max, metric != "views_per_visit");
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = samples.len().max(1);
    let x_at = |i: usize| {
        if n == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y_at = |v: f64| TOP + plot_h * (1.0 - v / ceiling);
    let polyline = |series: &[Sample]| {
        series
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, s)| format!("{},{}", fmt(x_at(i)), fmt(y_at(s.value))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let line = polyline(samples);
    let bottom = TOP + plot_h;
    let area = if samples.is_empty() {
        String::new()
    } else {
        format!(
            "M{},{} L{} L{},{} Z",
            fmt(x_at(0)),
            fmt(bottom),
            line.replace(' ', " L"),
            fmt(x_at(samples.len() - 1)),
            fmt(bottom)
        )
    };
    let gridlines = (0..=4)
        .map(|k| {
            let v = ceiling * k as f64 / 4.0;
            Gridline {
                y: fmt(y_at(v)),
                // The baseline needs no number, and on a phone it would
                // touch the first date.
                label: if k == 0 {
                    String::new()
                } else {
                    view::metric(metric, v)
                },
            }
        })
        .collect();
    let step = n.div_ceil(X_LABELS).max(1);
    let ticks = (0..samples.len())
        .step_by(step)
        .map(|i| Tick {
            x: fmt(x_at(i)),
            label: bucket_label(&samples[i].label, months),
        })
        .collect();
    let slot = plot_w / n as f64;
    let hits = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let value = view::metric(metric, s.value);
            let label = bucket_label(&s.label, months);
            let prev = previous
                .and_then(|p| p.get(i))
                .map(|p| view::metric(metric, p.value))
                .unwrap_or_default();
            Hit {
                x: fmt((x_at(i) - slot / 2.0).max(LEFT)),
                width: fmt(slot),
                cx: fmt(x_at(i)),
                cy: fmt(y_at(s.value)),
                title: format!("{label}: {value} {}", metric.replace('_', " ")),
                value,
                previous: prev,
            }
        })
        .collect();
    Chart {
        metric: metric.to_string(),
        line,
        area,
        previous_line: previous.map(polyline),
        gridlines,
        ticks,
        hits,
        top: fmt(TOP),
        bottom: fmt(bottom),
        height: fmt(plot_h),
        rows: samples
            .iter()
            .map(|s| {
                (
                    bucket_label(&s.label, months),
                    view::metric(metric, s.value),
                )
            })
            .collect(),
    }
}

/// The `points` of a 100 × 30 sparkline.
pub fn sparkline(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0, f64::max).max(1.0);
    let n = values.len().max(2) - 1;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{},{}",
                fmt(100.0 * i as f64 / n as f64),
                fmt(28.0 - 26.0 * v / max)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_spans_the_plot() {
        let s: Vec<Sample> = (0..30)
            .map(|i| Sample {
                label: format!("2026-11-{:02}", i + 1),
                value: i as f64,
            })
            .collect();
        let c = chart("visitors", &s, None, false);
        assert_eq!(c.hits.len(), 30);
        assert!(c.line.starts_with("48.0,"));
        assert_eq!(c.gridlines.last().unwrap().label, "32");
        assert_eq!(c.ticks[0].label, "Nov 1");
        assert!(c.hits[3].title.contains("Nov 4: 3 visitors"));
        assert_eq!(bucket_label("2026-11-03 14:00:00", false), "14:00");
        assert_eq!(bucket_label("2026-11-01", true), "Nov 2026");
        assert_eq!(sparkline(&[0.0, 1.0]), "0.0,28.0 100.0,2.0");
    }
}
