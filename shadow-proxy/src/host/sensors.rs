//! Hardware health: temperatures, voltages, fans, power and current from
//! `/sys/class/hwmon`, and the kernel's thermal zones from
//! `/sys/class/thermal`, in SI units with the chips' own labels.
//!
//! hwmon's sysfs interface (Documentation/hwmon/sysfs-interface.rst):
//! each `hwmonN` directory has a `name` (the chip) and attributes
//! `<type><index>_input`, with an optional `<type><index>_label`. The
//! units are fixed by the type: millidegrees Celsius (`temp`), millivolts
//! (`in`), RPM (`fan`), microwatts (`power`), milliamperes (`curr`). A
//! thermal zone has `type` and `temp` (millidegrees). Many hosts, this
//! project's VMs among them, have neither; the sampler says so once.

use std::{collections::HashMap, path::Path};

/// What a sensor measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SensorKind {
    Temperature,
    Voltage,
    Fan,
    Power,
    Current,
}

impl SensorKind {
    const ALL: [SensorKind; 5] = [
        Self::Temperature,
        Self::Voltage,
        Self::Fan,
        Self::Power,
        Self::Current,
    ];

    /// The hwmon attribute prefix.
    fn prefix(self) -> &'static str {
        match self {
            Self::Temperature => "temp",
            Self::Voltage => "in",
            Self::Fan => "fan",
            Self::Power => "power",
            Self::Current => "curr",
        }
    }

    /// From hwmon's unit to the SI one.
    fn scale(self) -> f64 {
        match self {
            Self::Temperature | Self::Voltage | Self::Current => 1e-3,
            Self::Fan => 1.0,
            Self::Power => 1e-6,
        }
    }

    /// The unit, as the last part of the series key.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Temperature => "celsius",
            Self::Voltage => "volts",
            Self::Fan => "rpm",
            Self::Power => "watts",
            Self::Current => "amperes",
        }
    }
}

/// One sensor reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The chip (`coretemp`, `nct6779`, `thermal`), made unique on the host.
    pub chip: String,
    /// The chip's label for it (`Core 0`), else the attribute (`temp2`).
    pub sensor: String,
    pub kind: SensorKind,
    pub value: f64,
    /// The chip's own limits, where it has them (same unit).
    pub max: Option<f64>,
    pub crit: Option<f64>,
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_num(path: &Path) -> Option<f64> {
    read_trim(path)?.parse::<f64>().ok()
}

/// Directories `prefix<N>` under `root`, sorted by N.
fn numbered(root: &Path, prefix: &str) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, std::path::PathBuf)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

/// Makes `name` unique among `seen` by appending `-2`, `-3`, ...
fn unique(name: String, seen: &mut HashMap<String, usize>) -> String {
    let n = seen.entry(name.clone()).or_insert(0);
    *n += 1;
    if *n == 1 { name } else { format!("{name}-{n}") }
}

/// Every reading under a `class/hwmon` directory.
pub fn read_hwmon(class: &Path) -> Vec<Reading> {
    let mut out = Vec::new();
    let mut chips = HashMap::new();
    for (n, dir) in numbered(class, "hwmon") {
        let name = read_trim(&dir.join("name")).unwrap_or_else(|| format!("hwmon{n}"));
        let chip = unique(name, &mut chips);
        let mut labels = HashMap::new();
        for kind in SensorKind::ALL {
            let mut indices: Vec<u32> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let f = e.file_name().to_string_lossy().into_owned();
                    f.strip_prefix(kind.prefix())?
                        .strip_suffix("_input")?
                        .parse()
                        .ok()
                })
                .collect();
            indices.sort_unstable();
            for i in indices {
                let attr = |suffix: &str| dir.join(format!("{}{i}_{suffix}", kind.prefix()));
                let Some(raw) = read_num(&attr("input")) else {
                    continue;
                };
                let limit = |s: &str| {
                    read_num(&attr(s))
                        .filter(|v| *v > 0.0)
                        .map(|v| v * kind.scale())
                };
                let label = read_trim(&attr("label"))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| format!("{}{i}", kind.prefix()));
                out.push(Reading {
                    chip: chip.clone(),
                    sensor: unique(label, &mut labels),
                    kind,
                    value: raw * kind.scale(),
                    max: limit("max"),
                    crit: limit("crit"),
                });
            }
        }
    }
    out
}

/// Every thermal zone's temperature under a `class/thermal` directory.
pub fn read_thermal(class: &Path) -> Vec<Reading> {
    let mut seen = HashMap::new();
    numbered(class, "thermal_zone")
        .into_iter()
        .filter_map(|(n, dir)| {
            let t = read_num(&dir.join("temp"))?;
            let label = read_trim(&dir.join("type")).unwrap_or_else(|| format!("zone{n}"));
            // Trip points: `critical` is the limit, the lowest `hot` or
            // `passive` one the zone's own "max".
            let (mut max, mut crit) = (None::<f64>, None::<f64>);
            for i in 0..16 {
                let (Some(kind), Some(temp)) = (
                    read_trim(&dir.join(format!("trip_point_{i}_type"))),
                    read_num(&dir.join(format!("trip_point_{i}_temp"))),
                ) else {
                    break;
                };
                let temp = temp * 1e-3;
                match kind.as_str() {
                    "critical" => crit = Some(crit.map_or(temp, |c| c.min(temp))),
                    "hot" | "passive" => max = Some(max.map_or(temp, |m| m.min(temp))),
                    _ => {}
                }
            }
            Some(Reading {
                chip: "thermal".into(),
                sensor: unique(label, &mut seen),
                kind: SensorKind::Temperature,
                value: t * 1e-3,
                max,
                crit,
            })
        })
        .collect()
}

/// The hardware signal of the failure probability: how far the worst
/// sensor has moved from its usual reading towards its limit (0 usual, 1
/// at the limit). Only kinds where higher is worse (temperature, power,
/// current) with a limit (`crit`, else `max`) count; "usual" is a slow
/// moving average per sensor (about an hour at the default interval).
#[derive(Debug, Default)]
pub struct Headroom {
    usual: HashMap<String, f64>,
}

impl Headroom {
    const SPAN: f64 = 720.0;

    pub fn update(&mut self, readings: &[Reading]) -> Option<f64> {
        let mut worst: Option<f64> = None;
        for r in readings {
            if !matches!(
                r.kind,
                SensorKind::Temperature | SensorKind::Power | SensorKind::Current
            ) || !r.value.is_finite()
            {
                continue;
            }
            let Some(limit) = r.crit.or(r.max) else {
                continue;
            };
            let usual = self
                .usual
                .entry(format!("{}/{}", r.chip, r.sensor))
                .or_insert(r.value);
            *usual += (r.value - *usual) / Self::SPAN;
            let room = limit - *usual;
            if room > 0.0 {
                let x = ((r.value - *usual) / room).clamp(0.0, 1.5);
                worst = Some(worst.map_or(x, |w| w.max(x)));
            }
        }
        worst
    }
}

/// hwmon and thermal readings under a sysfs root (`/sys`).
pub fn read_all(sys: &Path) -> Vec<Reading> {
    let mut r = read_hwmon(&sys.join("class/hwmon"));
    r.extend(read_thermal(&sys.join("class/thermal")));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_the_worst_way_to_a_limit_from_the_usual_reading() {
        let reading = |value: f64, crit: Option<f64>| Reading {
            chip: "coretemp".into(),
            sensor: "Core 0".into(),
            kind: SensorKind::Temperature,
            value,
            max: None,
            crit,
        };
        let mut h = Headroom::default();
        for _ in 0..100 {
            assert_eq!(h.update(&[reading(40.0, Some(100.0))]), Some(0.0));
        }
        // Halfway from a usual 40 C to a critical 100 C.
        let x = h.update(&[reading(70.0, Some(100.0))]).unwrap();
        assert!((x - 0.5).abs() < 0.01, "{x}");
        assert_eq!(
            h.update(&[reading(70.0, None)]),
            None,
            "no limit, no signal"
        );
    }

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs-node-exporter")
    }

    fn find<'a>(r: &'a [Reading], chip: &str, sensor: &str) -> &'a Reading {
        r.iter()
            .find(|x| x.chip == chip && x.sensor == sensor)
            .unwrap_or_else(|| panic!("{chip}/{sensor} not in {r:#?}"))
    }

    #[test]
    fn real_machines_sysfs_trees_parse_with_units_labels_and_limits() {
        let r = read_all(&fixture());
        // Two Intel packages with the same chip name stay apart.
        let pkg = find(&r, "coretemp", "Physical id 0");
        assert_eq!(
            (pkg.kind, pkg.value, pkg.max, pkg.crit),
            (SensorKind::Temperature, 55.0, Some(84.0), Some(100.0))
        );
        assert_eq!(find(&r, "coretemp-2", "Core 3").value, 50.0);
        // A super-I/O chip: millivolts to volts, fans in RPM, no labels.
        let v = find(&r, "nct6779", "in0");
        assert_eq!(
            (v.kind, v.value, v.max),
            (SensorKind::Voltage, 0.792, Some(1.744))
        );
        assert_eq!(find(&r, "nct6779", "fan2").value, 1098.0);
        // Two sensors with the same label on one chip stay apart.
        assert_eq!(find(&r, "hwmon4", "foosensor").value, 55.0);
        assert_eq!(find(&r, "hwmon4", "foosensor-2").value, 54.0);
        // Chips with no readings add nothing; the thermal zone is there.
        assert!(
            !r.iter()
                .any(|x| x.chip.starts_with("asus") || x.chip == "bogus")
        );
        let zone = find(&r, "thermal", "cpu-thermal");
        assert!((zone.value - 12.376).abs() < 1e-9);
        assert_eq!(r.len(), 2 * 5 + 3 + 3 + 2 + 1, "{r:#?}");
    }

    #[test]
    fn no_sensors_is_empty_not_an_error() {
        let empty = std::env::temp_dir().join(format!("shadow-no-sensors-{}", std::process::id()));
        std::fs::create_dir_all(empty.join("class/thermal")).unwrap();
        assert!(read_all(&empty).is_empty());
        assert!(read_all(Path::new("/nonexistent")).is_empty());
        let _ = std::fs::remove_dir_all(&empty);
    }
}
