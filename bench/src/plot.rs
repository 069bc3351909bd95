//! `--plot DIR`: SVG charts, drawn with `plotters`.
//!
//! - `throughput-{quic,tcp}.svg`, `p99-{quic,tcp}.svg`: retrieves and durable stores of
//!   64 B against requests in flight over one connection, with the bare echo server (the
//!   floor) on the same axes;
//! - with `--soak`: `soak-{backend}.svg`, the soak's throughput and the server's memory
//!   over time.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One line of a chart: its name and its points.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A line chart of `series` in `path`; `log_x` for a logarithmic x axis.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max);
    let x_min = points().map(|p| p.0).fold(x_max, f64::min);
    let y_max = points().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(84);
    let style = |i: usize| Palette99::pick(i).stroke_width(2);
    if log_x {
        let mut chart = builder
            .build_cartesian_2d((x_min.max(1.0)..x_max).log_scale(), 0.0..y_max)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::num(*y))
            .draw()
            .map_err(|e| draw(&e))?;
        for (i, s) in series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(s.points.clone(), style(i)))
                .map_err(|e| draw(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style(i)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
    } else {
        let mut chart = builder
            .build_cartesian_2d(x_min.min(0.0)..x_max, 0.0..y_max)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .y_label_formatter(&|y| crate::num(*y))
            .draw()
            .map_err(|e| draw(&e))?;
        for (i, s) in series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(s.points.clone(), style(i)))
                .map_err(|e| draw(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style(i)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

/// The soak's charts in `dir`: throughput, and the server's memory, over time.
pub(crate) fn soak_charts(dir: &Path, report: &crate::soak::Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = report.backend.to_lowercase();
    let ops = Series {
        name: "operations/s (mixed)".into(),
        points: report.samples.iter().map(|s| (s.t, s.per_second)).collect(),
    };
    line_chart(
        &dir.join(format!("soak-{name}-throughput.svg")),
        &format!("Soak on {}: throughput", report.backend),
        "seconds",
        "operations/s",
        &[ops],
        false,
    )?;
    let start = std::iter::once((0.0, report.start.0 / (1024.0 * 1024.0)));
    let rss = Series {
        name: "server RSS, MiB".into(),
        points: start
            .chain(
                report
                    .samples
                    .iter()
                    .map(|s| (s.t, s.rss / (1024.0 * 1024.0))),
            )
            .collect(),
    };
    line_chart(
        &dir.join(format!("soak-{name}-memory.svg")),
        &format!("Soak on {}: server memory", report.backend),
        "seconds",
        "MiB",
        &[rss],
        false,
    )
}
