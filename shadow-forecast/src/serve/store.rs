//! What the service keeps on disk, per metric in `dir/<metric>/`: the
//! trained model (shadow-forecast's `Forecaster::save`) and the grid it
//! forecasts from, `history.csv`; and a metric's slot loaded from them at
//! start ([`load_slot`]).
//!
//! The grid is saved so that a restarted agent serves forecasts at once
//! from its loaded model instead of waiting hours for history. It is a
//! `timestamp,value,anomalous` file (unix seconds), which
//! `shadowctl forecast --model DIR --csv DIR/history.csv` reads as is (the
//! third column, the anomaly flags fed back into training, is ignored there).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use crate::Forecaster;

use super::{
    ForecastSettings,
    resample::{Grid, Resampler},
    service::{Data, Published, Slot, Training},
    watch::Watch,
};

/// The history file's name inside a metric's directory.
pub const HISTORY_FILE: &str = "history.csv";

/// A metric's directory: the name with anything but `[A-Za-z0-9._-]`
/// replaced, so a process name cannot climb out of `root`.
pub fn metric_dir(root: &Path, metric: &str) -> PathBuf {
    let safe: String = metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(safe.trim_start_matches('.'))
}

/// One saved grid point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saved {
    pub t: i64,
    pub value: f64,
    pub anomalous: bool,
}

/// Writes the points (replacing the file by a rename, so a crash leaves
/// the old one or the new one, never half of either).
pub fn save_history(dir: &Path, points: &[Saved]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::with_capacity(points.len() * 24 + 32);
    text.push_str("timestamp,value,anomalous\n");
    for p in points {
        let _ = writeln!(text, "{},{},{}", p.t, p.value, u8::from(p.anomalous));
    }
    let tmp = dir.join(format!("{HISTORY_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(HISTORY_FILE))
}

/// Reads what [`save_history`] wrote; `None` when there is no file. Lines
/// that do not parse are skipped: a damaged history costs points, not the
/// agent's start.
pub fn load_history(dir: &Path) -> std::io::Result<Option<Vec<Saved>>> {
    let text = match std::fs::read_to_string(dir.join(HISTORY_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let points = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split(',');
            let t = cols.next()?.trim().parse().ok()?;
            let value: f64 = cols.next()?.trim().parse().ok()?;
            let anomalous = cols.next().is_some_and(|a| a.trim() == "1");
            value.is_finite().then_some(Saved {
                t,
                value,
                anomalous,
            })
        })
        .collect();
    Ok(Some(points))
}

impl Slot {
    /// Writes the grid and its flags to `dir/history.csv`.
    pub fn save_history(&self) -> std::io::Result<()> {
        let points: Vec<Saved> = {
            let mut d = self.data();
            d.unsaved = 0;
            d.grid
                .points()
                .map(|(t, value)| Saved {
                    t,
                    value,
                    anomalous: d.watch.is_flagged(t),
                })
                .collect()
        };
        // One point is no history to start from (a short-lived agent).
        if points.len() < 2 {
            return Ok(());
        }
        save_history(&self.dir, &points)
    }
}

/// A slot with whatever `dir/<metric>/` holds: a model trained at another
/// step or for a shorter horizon is not used (the trainer replaces it).
pub(super) fn load_slot(settings: &ForecastSettings, metric: &str) -> Slot {
    let dir = metric_dir(&settings.dir, metric);
    let model = match Forecaster::load(&dir) {
        Ok(f) if f.step == settings.step && f.config.horizon >= settings.horizon => {
            tracing::info!(metric, model = %f.selection.label(), trained_until = f.trained_until, "Forecast model loaded");
            Some(Arc::new(f))
        }
        Ok(f) => {
            tracing::info!(
                metric,
                step = f.step,
                horizon = f.config.horizon,
                "Saved forecast model does not fit the settings; retraining"
            );
            None
        }
        Err(_) if !dir.join("forecaster.json").exists() => None,
        Err(error) => {
            tracing::warn!(%error, metric, "Cannot load the saved forecast model; retraining");
            None
        }
    };
    let mut data = Data {
        resampler: Resampler::new(settings.step),
        grid: Grid::new(settings.step, settings.grid_points, settings.max_gap),
        watch: Watch::new(settings.detector),
        judge: None,
        unsaved: 0,
    };
    match load_history(&dir) {
        Ok(Some(points)) => {
            for p in points.iter().filter(|p| p.t % settings.step == 0) {
                data.grid.push(p.t, p.value);
                if p.anomalous {
                    data.watch.flag(p.t);
                }
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, metric, "Cannot read the saved forecast history"),
    }
    Slot {
        name: metric.to_owned(),
        dir,
        model: RwLock::new(model),
        published: RwLock::new(Arc::new(Published::default())),
        data: Mutex::new(data),
        training: Mutex::new(Training::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_and_names_stay_inside_root() {
        let root =
            std::env::temp_dir().join(format!("shadow-forecast-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = metric_dir(&root, "process.nginx[42].cpu_cores");
        assert_eq!(dir, root.join("process.nginx_42_.cpu_cores"));
        assert_eq!(metric_dir(&root, "../x/y"), root.join("_x_y"));
        assert!(load_history(&dir).unwrap().is_none());
        let points = [
            Saved {
                t: 60,
                value: 1.5,
                anomalous: false,
            },
            Saved {
                t: 120,
                value: -2.0,
                anomalous: true,
            },
        ];
        save_history(&dir, &points).unwrap();
        assert_eq!(load_history(&dir).unwrap().unwrap(), points);
        std::fs::write(
            dir.join(HISTORY_FILE),
            "timestamp,value\n60,1\nbad\n120,NaN\n180,2,0\n",
        )
        .unwrap();
        let back = load_history(&dir).unwrap().unwrap();
        assert_eq!(back.iter().map(|p| p.t).collect::<Vec<_>>(), [60, 180]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
