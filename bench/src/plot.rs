//! Forecast plots for the benchmark report: one PNG panel with the recent
//! history, the actual future, the P50 forecast and its P10-P90 band.
//!
//! Text uses a system TTF (DejaVu Sans from `fonts-dejavu-core`), registered
//! once per process; without one the plot is still drawn, only without text.

use std::error::Error;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// One panel: the recent history, the actual future and a forecast with its P10-P90 band.
pub struct ForecastPlot<'a> {
    pub title: &'a str,
    /// The points before the origin, all of them plotted.
    pub history: &'a [f64],
    /// The points after the origin.
    pub actual: &'a [f64],
    /// The forecast, the same length as `actual` or shorter.
    pub p10: &'a [f64],
    pub p50: &'a [f64],
    pub p90: &'a [f64],
    /// The x axis is in hours from the forecast origin: x = i * step / 3600.
    pub step_seconds: i64,
}

/// DejaVu Sans where Debian (`fonts-dejavu-core`) and other distributions put it.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the first font found as "sans-serif", once; false if there is none.
pub(crate) fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Writes a 1200x500 PNG. Errors are returned as a String that names the path.
pub fn write_png(path: &Path, plot: &ForecastPlot<'_>) -> Result<(), String> {
    draw(path, plot, font_available()).map_err(|e| format!("writing plot {}: {e}", path.display()))
}

/// The finite points of `values`, the first at x = `first` steps of `hours`.
fn points(values: &[f64], first: isize, hours: f64) -> Vec<(f64, f64)> {
    let at = |i: usize| (first + i as isize) as f64 * hours;
    let pts = values.iter().enumerate().map(|(i, &v)| (at(i), v));
    pts.filter(|&(_, v)| v.is_finite()).collect()
}

fn draw(path: &Path, plot: &ForecastPlot<'_>, text: bool) -> Result<(), Box<dyn Error>> {
    let hours = plot.step_seconds.max(1) as f64 / 3600.0;
    let n = plot.p10.len().min(plot.p50.len()).min(plot.p90.len());
    let (p10, p50, p90) = (&plot.p10[..n], &plot.p50[..n], &plot.p90[..n]);
    let history = points(plot.history, -(plot.history.len() as isize), hours);
    let (actual, median) = (points(plot.actual, 0, hours), points(p50, 0, hours));
    let band = [
        points(p90, 0, hours),
        points(p10, 0, hours).into_iter().rev().collect(),
    ]
    .concat();

    let all = [plot.history, plot.actual, p10, p50, p90].concat();
    let finite = all.into_iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    // Headroom above the data for the legend in the upper left corner.
    let (y0, y1) = (lo - pad, hi + if text { 5.0 * pad } else { pad });
    let x0 = -(plot.history.len() as f64) * hours;
    let x1 = plot.actual.len().max(n).max(1) as f64 * hours;

    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        let b = builder.caption(plot.title, ("sans-serif", 24));
        b.x_label_area_size(45).y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("hours from forecast origin").y_desc("value");
        mesh.label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;

    let band_color = RGBColor(150, 190, 235).mix(0.5);
    chart
        .draw_series(std::iter::once(Polygon::new(band, band_color.filled())))?
        .label("P10-P90")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], band_color.filled()));
    let lines = [
        (history, RGBColor(150, 150, 150).mix(1.0), "history"),
        (actual, BLACK.mix(1.0), "actual"),
        (median, BLUE.mix(1.0), "P50 forecast"),
        (vec![(0.0, y0), (0.0, y1)], RED.mix(0.7), "forecast origin"),
    ];
    for (pts, color, name) in lines {
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(pts, style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    if text {
        let mut legend = chart.configure_series_labels();
        legend
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK);
        legend
            .background_style(WHITE.mix(0.85))
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let path = std::env::temp_dir().join(format!("shadow-plot-{}.png", std::process::id()));
        let series: Vec<f64> = (0..48).map(|i| (i as f64 / 5.0).sin()).collect();
        let (p10, p90): (Vec<f64>, Vec<f64>) =
            series[24..].iter().map(|v| (v - 0.2, v + 0.2)).unzip();
        let plot = ForecastPlot {
            title: "test — fold 0",
            history: &series[..24],
            actual: &series[24..],
            p10: &p10,
            p50: &series[24..],
            p90: &p90,
            step_seconds: 300,
        };
        write_png(&path, &plot).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}
