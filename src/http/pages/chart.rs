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

/// One bucket of a series: its label as the API writes it and its value,
/// `None` for a rate of a bucket without visits (no point is drawn there).
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    pub value: Option<f64>,
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
    /// `None`: no point in this bucket.
    pub cy: Option<String>,
    pub title: String,
    pub value: String,
    pub previous: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub metric: String,
    /// SVG path data: one run of `M`/`L` per stretch of buckets with values.
    pub line: String,
    pub area: String,
    /// The previous period's line (path data), when comparing.
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
        .filter_map(|s| s.value)
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
    let bottom = TOP + plot_h;
    // Stretches of consecutive buckets with a value, as (index, value) runs:
    // a bucket without one breaks the line instead of dropping it to zero.
    let runs = |series: &[Sample]| {
        let mut runs: Vec<Vec<(usize, f64)>> = Vec::new();
        let mut open = false;
        for (i, s) in series.iter().take(n).enumerate() {
            match s.value {
                Some(v) if open => runs.last_mut().into_iter().for_each(|r| r.push((i, v))),
                Some(v) => {
                    runs.push(vec![(i, v)]);
                    open = true;
                }
                None => open = false,
            }
        }
        runs
    };
    let points = |run: &[(usize, f64)]| {
        run.iter()
            .map(|&(i, v)| format!("{},{}", fmt(x_at(i)), fmt(y_at(v))))
            .collect::<Vec<_>>()
            .join(" L")
    };
    let path = |series: &[Sample]| {
        runs(series)
            .iter()
            .map(|run| format!("M{}", points(run)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let line = path(samples);
    let area = runs(samples)
        .iter()
        .filter_map(|run| {
            let (first, last) = (run.first()?.0, run.last()?.0);
            Some(format!(
                "M{},{} L{} L{},{} Z",
                fmt(x_at(first)),
                fmt(bottom),
                points(run),
                fmt(x_at(last)),
                fmt(bottom)
            ))
        })
        .collect::<Vec<_>>()
        .join(" ");
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
            let value = shown(metric, s.value);
            let label = bucket_label(&s.label, months);
            let prev = previous
                .and_then(|p| p.get(i))
                .map(|p| shown(metric, p.value))
                .unwrap_or_default();
            Hit {
                x: fmt((x_at(i) - slot / 2.0).max(LEFT)),
                width: fmt(slot),
                cx: fmt(x_at(i)),
                cy: s.value.map(|v| fmt(y_at(v))),
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
        previous_line: previous.map(path),
        gridlines,
        ticks,
        hits,
        top: fmt(TOP),
        bottom: fmt(bottom),
        height: fmt(plot_h),
        rows: samples
            .iter()
            .map(|s| (bucket_label(&s.label, months), shown(metric, s.value)))
            .collect(),
    }
}

/// A bucket's value as shown, a dash when it has none.
fn shown(metric: &str, value: Option<f64>) -> String {
    value.map_or_else(|| view::NO_VALUE.to_string(), |v| view::metric(metric, v))
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
                value: Some(i as f64),
            })
            .collect();
        let c = chart("visitors", &s, None, false);
        assert_eq!(c.hits.len(), 30);
        assert!(c.line.starts_with("M48.0,"));
        assert!(!c.line[1..].contains('M'), "one unbroken line");
        assert_eq!(c.gridlines.last().unwrap().label, "32");
        assert_eq!(c.ticks[0].label, "Nov 1");
        assert!(c.hits[3].title.contains("Nov 4: 3 visitors"));
        assert_eq!(bucket_label("2026-11-03 14:00:00", false), "14:00");
        assert_eq!(bucket_label("2026-11-01", true), "Nov 2026");
        assert_eq!(sparkline(&[0.0, 1.0]), "0.0,28.0 100.0,2.0");
    }

    #[test]
    fn buckets_without_a_value_break_the_line_and_have_no_point() {
        let values = [Some(40.0), None, None, Some(60.0), Some(50.0), None];
        let s: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                label: format!("2026-11-{:02}", i + 1),
                value: *v,
            })
            .collect();
        let c = chart("bounce_rate", &s, Some(&s), false);
        assert_eq!(c.line.matches('M').count(), 2, "{}", c.line);
        assert_eq!(c.area.matches('Z').count(), 2, "{}", c.area);
        assert_eq!(c.previous_line.as_deref(), Some(c.line.as_str()));
        let points: Vec<bool> = c.hits.iter().map(|h| h.cy.is_some()).collect();
        assert_eq!(points, [true, false, false, true, true, false]);
        assert_eq!(c.hits[1].value, "–");
        assert_eq!(c.rows[1].1, "–");
        assert_eq!(c.rows[0].1, "40%");
        // Nothing at all: no line, no area, and the scale of an empty chart.
        let none: Vec<Sample> = s
            .iter()
            .map(|x| Sample {
                value: None,
                ..x.clone()
            })
            .collect();
        let c = chart("bounce_rate", &none, None, false);
        assert!(c.line.is_empty() && c.area.is_empty());
    }
}
