//! Time series input: parsing `timestamp,value` CSV files and agent history,
//! and putting them onto a regular grid the way a user would expect.
//!
//! Everything a model sees went through [`Series::from_points`]. Real
//! exports are messy, so by default ([`GridPolicy::tidy`]) it repairs what
//! has one sensible repair and says what it did in [`Cleaning`]:
//! - missing values (empty, `NaN`, infinite) are dropped and become gaps;
//! - points out of order are sorted, and repeated timestamps averaged;
//! - a gap of up to `max_fill` missing steps is filled by linear
//!   interpolation and marked `imputed` (neither scored nor trusted as an
//!   anomaly);
//! - a longer gap, up to `max_mask` steps, is filled too but also marked
//!   `masked`: its training weight is 0, so every model is fitted around it
//!   instead of on invented data;
//! - history before a gap longer than that is dropped (a forecast from
//!   before a month-long outage says little about after it).
//!
//! What cannot be repaired is still an error that names the series and the
//! place: too few points, every value missing, timestamps off the grid.

use std::{fmt, path::Path};

use crate::error::ForecastError;

/// A regular series: `values[i]` is at `start + i * step` (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub start: i64,
    pub step: i64,
    pub values: Vec<f64>,
    /// True where a value was filled in over a gap (short or long).
    pub imputed: Vec<bool>,
    /// True where a value was filled in over a long gap: weighted out of
    /// training (see [`Series::weights`]).
    pub masked: Vec<bool>,
    /// The original timestamp text of each point, as read (CSV only), so
    /// outputs can be joined back to the input file.
    pub labels: Vec<String>,
    /// What [`Series::from_points`] repaired.
    pub cleaning: Cleaning,
}

/// How [`Series::from_points`] treats irregular input.
#[derive(Debug, Clone, Copy)]
pub struct GridPolicy {
    /// The step in seconds; `None` infers it (the most common difference).
    pub step: Option<i64>,
    /// The longest run of missing steps that is interpolated.
    pub max_fill: usize,
    /// The longest run of missing steps that is filled and masked out of
    /// training; history before a longer gap is dropped.
    pub max_mask: usize,
    /// Drop missing values, sort, and average repeated timestamps; when
    /// false these are errors (for input that should already be clean).
    pub tidy: bool,
    /// Rounds timestamps to the nearest grid point first (sub-second
    /// arrival traces binned by the caller).
    pub snap_to_grid: bool,
}

impl Default for GridPolicy {
    fn default() -> Self {
        Self {
            step: None,
            max_fill: 12,
            // 30 days of 5-minute steps.
            max_mask: 8_640,
            tidy: true,
            snap_to_grid: false,
        }
    }
}

/// What was repaired on the way onto the grid; [`fmt::Display`] is the
/// one-line summary the CLI prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cleaning {
    /// Values that were empty, `NaN` or infinite (dropped, so gaps).
    pub missing_values: usize,
    /// Points that came after a later timestamp (sorted into place).
    pub out_of_order: usize,
    /// Timestamps that appeared more than once, and the extra points
    /// averaged into them.
    pub repeated_timestamps: usize,
    pub merged_points: usize,
    /// Short gaps interpolated, and the points they added.
    pub interpolated_gaps: usize,
    pub interpolated_points: usize,
    /// Long gaps masked out of training, and the points they added.
    pub masked_gaps: usize,
    pub masked_points: usize,
    /// The longest gap, in missing steps.
    pub longest_gap: usize,
    /// Points dropped because they came before a gap too long to mask.
    pub dropped_points: usize,
    pub dropped_before: Option<i64>,
}

impl Cleaning {
    /// True when the input was already a clean regular series.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Cleaning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.missing_values > 0 {
            parts.push(format!(
                "{} missing values (empty, NaN or infinite) dropped",
                self.missing_values
            ));
        }
        if self.out_of_order > 0 {
            parts.push(format!("{} points out of order sorted", self.out_of_order));
        }
        if self.repeated_timestamps > 0 {
            parts.push(format!(
                "{} repeated timestamps averaged ({} extra points)",
                self.repeated_timestamps, self.merged_points
            ));
        }
        if self.interpolated_gaps > 0 {
            parts.push(format!(
                "{} short gaps interpolated ({} points)",
                self.interpolated_gaps, self.interpolated_points
            ));
        }
        if self.masked_gaps > 0 {
            parts.push(format!(
                "{} long gaps masked out of training ({} points)",
                self.masked_gaps, self.masked_points
            ));
        }
        if self.longest_gap > 0 {
            parts.push(format!("longest gap {} steps", self.longest_gap));
        }
        if let Some(t) = self.dropped_before {
            parts.push(format!(
                "{} points before {} dropped (a longer gap follows them)",
                self.dropped_points,
                format_timestamp(t)
            ));
        }
        if parts.is_empty() {
            f.write_str("clean: nothing imputed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

impl Series {
    /// Puts `(unix seconds, value)` points on a regular grid; see the
    /// module docs for what is repaired and what is refused.
    pub fn from_points(
        name: impl Into<String>,
        points: &[(i64, f64)],
        policy: GridPolicy,
    ) -> Result<Self, ForecastError> {
        let name = name.into();
        let mut cleaning = Cleaning::default();
        let mut points = points.to_vec();
        if policy.tidy {
            let before = points.len();
            points.retain(|p| p.1.is_finite());
            cleaning.missing_values = before - points.len();
            if points.is_empty() && before > 0 {
                return Err(ForecastError::Unusable {
                    series: name,
                    reason: format!("all {before} values are missing (empty, NaN or infinite)"),
                });
            }
            cleaning.out_of_order = points.windows(2).filter(|w| w[1].0 < w[0].0).count();
            points.sort_by_key(|p| p.0);
        }
        if policy.snap_to_grid && points.len() >= 2 {
            let step = policy.step.unwrap_or_else(|| modal_step(&points)).max(1);
            let t0 = points[0].0;
            for p in &mut points {
                p.0 = t0 + ((p.0 - t0) as f64 / step as f64).round() as i64 * step;
            }
            points.sort_by_key(|p| p.0);
        }
        if policy.tidy || policy.snap_to_grid {
            let (merged, repeated) = merge_duplicates(&points);
            cleaning.repeated_timestamps = repeated;
            cleaning.merged_points = points.len() - merged.len();
            points = merged;
        }
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
            None => modal_step(&points),
        };
        let mut start = points[0].0;
        let mut values = Vec::with_capacity(points.len());
        let mut imputed = Vec::with_capacity(points.len());
        let mut masked = Vec::with_capacity(points.len());
        values.push(points[0].1);
        imputed.push(false);
        masked.push(false);
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
            cleaning.longest_gap = cleaning.longest_gap.max(missing);
            if missing > policy.max_mask.max(policy.max_fill) {
                // Everything so far is history before a gap too long to
                // bridge: start again after it.
                cleaning.dropped_points += values.len() - imputed.iter().filter(|&&x| x).count();
                cleaning.dropped_before = Some(t1);
                cleaning.interpolated_gaps = 0;
                cleaning.interpolated_points = 0;
                cleaning.masked_gaps = 0;
                cleaning.masked_points = 0;
                start = t1;
                values.clear();
                imputed.clear();
                masked.clear();
            } else if missing > 0 {
                let long = missing > policy.max_fill;
                if long {
                    cleaning.masked_gaps += 1;
                    cleaning.masked_points += missing;
                } else {
                    cleaning.interpolated_gaps += 1;
                    cleaning.interpolated_points += missing;
                }
                for k in 1..=missing {
                    let f = k as f64 / steps as f64;
                    values.push(v0 + (v1 - v0) * f);
                    imputed.push(true);
                    masked.push(long);
                }
            }
            values.push(v1);
            imputed.push(false);
            masked.push(false);
        }
        if values.len() < 2 {
            return Err(ForecastError::TooShort {
                series: name,
                need: 2,
                got: values.len(),
            });
        }
        Ok(Self {
            name,
            start,
            step,
            values,
            imputed,
            masked,
            labels: Vec::new(),
            cleaning,
        })
    }

    /// Training weights when a long gap was masked (0 there, 1 elsewhere);
    /// `None` when every point may be trained on.
    pub fn weights(&self) -> Option<Vec<f64>> {
        self.masked.iter().any(|&m| m).then(|| {
            self.masked
                .iter()
                .map(|&m| if m { 0.0 } else { 1.0 })
                .collect()
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
        if series.cleaning.is_clean() && series.values.len() == labels.len() {
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
            masked: self.masked[..n].to_vec(),
            labels: self.labels.get(..n).map(<[_]>::to_vec).unwrap_or_default(),
            cleaning: self.cleaning.clone(),
        }
    }

    /// Steps per day: the natural season of infrastructure metrics.
    pub fn steps_per_day(&self) -> usize {
        (86_400 / self.step.max(1)).max(1) as usize
    }
}

/// Averages runs of equal timestamps into one point; also returns how
/// many timestamps were repeated.
fn merge_duplicates(points: &[(i64, f64)]) -> (Vec<(i64, f64)>, usize) {
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
    let repeated = out.iter().filter(|p| p.2 > 1).count();
    (
        out.into_iter().map(|(t, s, n)| (t, s / n as f64)).collect(),
        repeated,
    )
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
        // A missing value is kept as NaN for `from_points` to count and drop.
        let value = v.parse::<f64>().ok().or_else(|| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "na" | "n/a" | "null" | "none" | "-"
            )
            .then_some(f64::NAN)
        });
        let parsed = parse_timestamp(ts).and_then(|t| value.map(|v| (t, v)));
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
        let strict = GridPolicy {
            tidy: false,
            ..GridPolicy::default()
        };
        let back = Series::from_points("s", &pts(&[0, 60, 30]), strict).unwrap_err();
        assert!(
            matches!(back, ForecastError::NonMonotonic { index: 2, .. }),
            "{back}"
        );
        let dup = Series::from_points("s", &pts(&[0, 60, 60]), strict).unwrap_err();
        assert!(matches!(dup, ForecastError::NonMonotonic { .. }), "{dup}");
        let nan = Series::from_points("s", &[(0, 1.0), (60, f64::NAN)], strict).unwrap_err();
        assert!(
            matches!(nan, ForecastError::NotFinite { index: 1, .. }),
            "{nan}"
        );
        let p = GridPolicy::default();
        let short = Series::from_points("s", &[(0, 1.0)], p).unwrap_err();
        assert!(matches!(short, ForecastError::TooShort { .. }), "{short}");
        let off = Series::from_points("s", &pts(&[0, 60, 120, 150]), p).unwrap_err();
        assert!(matches!(off, ForecastError::OffGrid { .. }), "{off}");
        let all_nan = Series::from_points("s", &[(0, f64::NAN), (60, f64::NAN)], p).unwrap_err();
        assert!(
            all_nan.to_string().contains("all 2 values are missing"),
            "{all_nan}"
        );
        let one_left = Series::from_points("s", &[(0, 1.0), (60, f64::NAN)], p).unwrap_err();
        assert!(matches!(one_left, ForecastError::TooShort { got: 1, .. }));
    }

    #[test]
    fn messy_input_is_repaired_and_summarised() {
        // Out of order, a repeated timestamp, a NaN, a short and a long gap.
        let mut points = vec![(0, 1.0), (120, 5.0), (60, 2.0), (60, 4.0), (180, f64::NAN)];
        points.extend((0..3).map(|k| (240 + 60 * k, 10.0)));
        // 31 missing steps after 360.
        points.extend((0..3).map(|k| (360 + 60 * 32 + 60 * k, 20.0)));
        let s = Series::from_points("s", &points, GridPolicy::default()).unwrap();
        assert_eq!(&s.values[..5], &[1.0, 3.0, 5.0, 7.5, 10.0]);
        assert_eq!(s.len(), 7 + 31 + 3);
        let c = &s.cleaning;
        assert_eq!(
            (c.missing_values, c.out_of_order, c.repeated_timestamps),
            (1, 1, 1)
        );
        assert_eq!((c.interpolated_gaps, c.interpolated_points), (1, 1));
        assert_eq!((c.masked_gaps, c.masked_points, c.longest_gap), (1, 31, 31));
        assert_eq!(s.masked.iter().filter(|&&m| m).count(), 31);
        assert!(!s.masked[3], "a short gap is interpolated, not masked");
        let w = s.weights().unwrap();
        assert_eq!(w.iter().filter(|&&w| w == 0.0).count(), 31);
        let text = c.to_string();
        for want in [
            "1 missing values",
            "1 repeated timestamps averaged",
            "1 short gaps interpolated (1 points)",
            "1 long gaps masked out of training (31 points)",
        ] {
            assert!(text.contains(want), "{want:?} not in {text:?}");
        }
        // --max-gap 31 interpolates the same gap instead.
        let wide = GridPolicy {
            max_fill: 31,
            ..GridPolicy::default()
        };
        let s = Series::from_points("s", &points, wide).unwrap();
        assert!(s.weights().is_none());
        assert_eq!(s.cleaning.interpolated_gaps, 2);
    }

    #[test]
    fn history_before_a_gap_too_long_to_mask_is_dropped() {
        let policy = GridPolicy {
            max_mask: 100,
            ..GridPolicy::default()
        };
        let s = Series::from_points(
            "s",
            &pts(&[0, 60, 120, 120 + 60 * 200, 120 + 60 * 201]),
            policy,
        )
        .unwrap();
        assert_eq!((s.start, s.len()), (120 + 60 * 200, 2));
        assert_eq!(s.cleaning.dropped_points, 3);
        assert!(s.cleaning.to_string().contains("3 points before"));
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
