//! Time series input: parsing `timestamp,value` CSV files and agent history,
//! and validating them onto a regular grid.
//!
//! Everything a model sees went through [`Series::from_points`], which
//! refuses what would make a forecast meaningless (NaNs, infinities,
//! timestamps that go backwards or repeat) and says where. Gaps are handled
//! explicitly: a gap of up to `max_fill` missing steps is filled by linear
//! interpolation and the filled points are marked (`imputed`), so they are
//! neither scored nor trusted as anomalies; a longer gap is an error, since
//! inventing hours of data would train the model on fiction.

use std::path::Path;

use crate::error::ForecastError;

/// A regular series: `values[i]` is at `start + i * step` (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub start: i64,
    pub step: i64,
    pub values: Vec<f64>,
    /// True where a value was interpolated over a gap.
    pub imputed: Vec<bool>,
    /// The original timestamp text of each point, as read (CSV only), so
    /// outputs can be joined back to the input file.
    pub labels: Vec<String>,
}

/// How [`Series::from_points`] treats irregular input.
#[derive(Debug, Clone, Copy)]
pub struct GridPolicy {
    /// The step in seconds; `None` infers it (the most common difference).
    pub step: Option<i64>,
    /// The longest run of missing steps that is interpolated.
    pub max_fill: usize,
    /// Repeated timestamps are averaged into one point instead of refused
    /// (exports sometimes write a sample twice).
    pub snap_to_grid: bool,
}

impl Default for GridPolicy {
    fn default() -> Self {
        Self {
            step: None,
            max_fill: 12,
            snap_to_grid: false,
        }
    }
}

impl Series {
    /// Puts `(unix seconds, value)` points on a regular grid.
    pub fn from_points(
        name: impl Into<String>,
        points: &[(i64, f64)],
        policy: GridPolicy,
    ) -> Result<Self, ForecastError> {
        let name = name.into();
        let merged;
        let points = if policy.snap_to_grid && points.len() >= 2 {
            let step = policy.step.unwrap_or_else(|| modal_step(points)).max(1);
            let mut sorted = points.to_vec();
            sorted.sort_by_key(|p| p.0);
            let t0 = sorted[0].0;
            let snapped: Vec<(i64, f64)> = sorted
                .iter()
                .map(|&(t, v)| {
                    (
                        t0 + ((t - t0) as f64 / step as f64).round() as i64 * step,
                        v,
                    )
                })
                .collect();
            merged = merge_duplicates(&snapped);
            &merged[..]
        } else {
            points
        };
        if points.len() < 2 {
            return Err(ForecastError::TooShort {
                series: name,
                need: 2,
                got: points.len(),
            });
        }
        for (i, &(_, v)) in points.iter().enumerate() {
            if !v.is_finite() {
                return Err(ForecastError::NotFinite {
                    series: name,
                    index: i,
                    value: v,
                });
            }
        }
        for (i, w) in points.windows(2).enumerate() {
            if w[1].0 <= w[0].0 {
                return Err(ForecastError::NonMonotonic {
                    series: name,
                    index: i + 1,
                    previous: w[0].0,
                    timestamp: w[1].0,
                });
            }
        }
        let step = match policy.step {
            Some(s) if s > 0 => s,
            Some(s) => {
                return Err(ForecastError::BadStep {
                    series: name,
                    step: s,
                });
            }
            None => modal_step(points),
        };
        let mut values = Vec::with_capacity(points.len());
        let mut imputed = Vec::with_capacity(points.len());
        values.push(points[0].1);
        imputed.push(false);
        for (i, w) in points.windows(2).enumerate() {
            let (t0, v0) = w[0];
            let (t1, v1) = w[1];
            let steps = ((t1 - t0) as f64 / step as f64).round() as i64;
            if steps < 1 || ((t1 - t0) - steps * step).abs() * 4 > step {
                return Err(ForecastError::OffGrid {
                    series: name,
                    index: i + 1,
                    timestamp: t1,
                    step,
                });
            }
            let missing = (steps - 1) as usize;
            if missing > policy.max_fill {
                return Err(ForecastError::Gap {
                    series: name,
                    after: t0,
                    missing,
                    max_fill: policy.max_fill,
                });
            }
            for k in 1..=missing {
                let f = k as f64 / steps as f64;
                values.push(v0 + (v1 - v0) * f);
                imputed.push(true);
            }
            values.push(v1);
            imputed.push(false);
        }
        Ok(Self {
            name,
            start: points[0].0,
            step,
            values,
            imputed,
            labels: Vec::new(),
        })
    }

    /// Reads a `timestamp,value` CSV file (a header line is skipped).
    /// Timestamps are unix seconds or `YYYY-MM-DD HH:MM:SS[.frac]` in UTC.
    pub fn read_csv(path: &Path, policy: GridPolicy) -> Result<Self, ForecastError> {
        let text = std::fs::read_to_string(path).map_err(|source| ForecastError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (points, labels) = parse_csv(&text).map_err(|(line, reason)| ForecastError::Csv {
            path: path.display().to_string(),
            line,
            reason,
        })?;
        let mut series = Self::from_points(name, &points, policy)?;
        if series.values.len() == labels.len() {
            series.labels = labels;
        }
        Ok(series)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The timestamp of point `i` (which may lie past the end).
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The first `n` points, as a series of their own.
    pub fn head(&self, n: usize) -> Series {
        let n = n.min(self.len());
        Series {
            name: self.name.clone(),
            start: self.start,
            step: self.step,
            values: self.values[..n].to_vec(),
            imputed: self.imputed[..n].to_vec(),
            labels: self.labels.get(..n).map(<[_]>::to_vec).unwrap_or_default(),
        }
    }

    /// Steps per day: the natural season of infrastructure metrics.
    pub fn steps_per_day(&self) -> usize {
        (86_400 / self.step.max(1)).max(1) as usize
    }
}

/// Averages runs of equal timestamps into one point.
fn merge_duplicates(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64, usize)> = Vec::with_capacity(points.len());
    for &(t, v) in points {
        match out.last_mut() {
            Some((lt, sum, n)) if *lt == t => {
                *sum += v;
                *n += 1;
            }
            _ => out.push((t, v, 1)),
        }
    }
    out.into_iter().map(|(t, s, n)| (t, s / n as f64)).collect()
}

/// The most common difference between consecutive timestamps.
fn modal_step(points: &[(i64, f64)]) -> i64 {
    let mut diffs: Vec<i64> = points.windows(2).map(|w| w[1].0 - w[0].0).collect();
    diffs.sort_unstable();
    let (mut best, mut best_n, mut i) = (diffs[0], 0, 0);
    while i < diffs.len() {
        let j = diffs[i..].iter().take_while(|&&d| d == diffs[i]).count();
        if j > best_n {
            (best, best_n) = (diffs[i], j);
        }
        i += j;
    }
    best
}

type Parsed = (Vec<(i64, f64)>, Vec<String>);

fn parse_csv(text: &str) -> Result<Parsed, (usize, String)> {
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (Some(ts), Some(v)) = (cols.next(), cols.next()) else {
            return Err((n + 1, "expected `timestamp,value`".into()));
        };
        let (ts, v) = (ts.trim().trim_matches('"'), v.trim().trim_matches('"'));
        let parsed = parse_timestamp(ts).and_then(|t| v.parse::<f64>().ok().map(|v| (t, v)));
        match parsed {
            Some(p) => {
                points.push(p);
                labels.push(ts.to_owned());
            }
            // A header line names its columns instead of holding data.
            None if n == 0 => {}
            None => {
                return Err((
                    n + 1,
                    format!("cannot read {ts:?},{v:?} as a time and a number"),
                ));
            }
        }
    }
    Ok((points, labels))
}

/// Unix seconds, or `YYYY-MM-DD[ T]HH:MM[:SS[.frac]]` (UTC; fractions dropped).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<i64>() {
        return Some(t);
    }
    let b = s.as_bytes();
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let sec = if b.len() >= 19 && b[16] == b':' {
        num(17..19)?
    } else {
        0
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

use shadow_api::time::days_from_civil;
pub use shadow_api::time::format_timestamp;

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(ts: &[i64]) -> Vec<(i64, f64)> {
        ts.iter().map(|&t| (t, t as f64)).collect()
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_timestamp("2014-02-14 14:30:00").unwrap();
        assert_eq!(t, 1_392_388_200);
        assert_eq!(format_timestamp(t), "2014-02-14 14:30:00");
        assert_eq!(
            parse_timestamp("2023-11-16 18:17:03.9799600"),
            Some(1_700_158_623)
        );
        assert_eq!(parse_timestamp("1392388200"), Some(1_392_388_200));
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
    }

    #[test]
    fn short_gaps_are_interpolated_and_marked() {
        let s =
            Series::from_points("s", &pts(&[0, 60, 120, 300, 360]), GridPolicy::default()).unwrap();
        assert_eq!(s.step, 60);
        assert_eq!(s.values, vec![0.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0]);
        assert_eq!(
            s.imputed,
            vec![false, false, false, true, true, false, false]
        );
    }

    #[test]
    fn bad_input_is_rejected_with_where() {
        let p = GridPolicy::default();
        let gap = Series::from_points("s", &pts(&[0, 60, 120, 120 + 60 * 20]), p).unwrap_err();
        assert!(gap.to_string().contains("19 missing steps"), "{gap}");
        let back = Series::from_points("s", &pts(&[0, 60, 30]), p).unwrap_err();
        assert!(
            matches!(back, ForecastError::NonMonotonic { index: 2, .. }),
            "{back}"
        );
        let dup = Series::from_points("s", &pts(&[0, 60, 60]), p).unwrap_err();
        assert!(matches!(dup, ForecastError::NonMonotonic { .. }), "{dup}");
        let merge = GridPolicy {
            snap_to_grid: true,
            ..p
        };
        let s =
            Series::from_points("s", &[(0, 1.0), (60, 2.0), (60, 4.0), (120, 5.0)], merge).unwrap();
        assert_eq!(s.values, vec![1.0, 3.0, 5.0]);
        let nan = Series::from_points("s", &[(0, 1.0), (60, f64::NAN)], p).unwrap_err();
        assert!(
            matches!(nan, ForecastError::NotFinite { index: 1, .. }),
            "{nan}"
        );
        let short = Series::from_points("s", &[(0, 1.0)], p).unwrap_err();
        assert!(matches!(short, ForecastError::TooShort { .. }), "{short}");
        let off = Series::from_points("s", &pts(&[0, 60, 120, 150]), p).unwrap_err();
        assert!(matches!(off, ForecastError::OffGrid { .. }), "{off}");
    }

    #[test]
    fn csv_with_header_and_labels() {
        let dir = std::env::temp_dir().join(format!("shadow-forecast-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cpu.csv");
        std::fs::write(
            &path,
            "timestamp,value\n2014-02-14 14:30:00,1.5\n2014-02-14 14:35:00,2\n",
        )
        .unwrap();
        let s = Series::read_csv(&path, GridPolicy::default()).unwrap();
        assert_eq!(
            (s.name.as_str(), s.step, s.values.clone()),
            ("cpu", 300, vec![1.5, 2.0])
        );
        assert_eq!(s.labels[1], "2014-02-14 14:35:00");
        std::fs::write(
            &path,
            "timestamp,value\n2014-02-14 14:30:00,1.5\n2014-02-14 14:35:00,x\n",
        )
        .unwrap();
        let err = Series::read_csv(&path, GridPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
