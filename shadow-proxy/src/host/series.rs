//! What a host sample measures, typed: the host as a whole, a cgroup, one
//! process, or a hardware sensor. [`Series::key`] is the series' name in the history, the
//! forecast API and the views (`process.nginx[42].rss_bytes`);
//! [`Series::gauge`] is its Prometheus name and label. Neither is ever
//! parsed back.

use super::sensors::SensorKind;
use crate::metrics::names;

/// A host-wide quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostField {
    CpuUtilisation,
    MemoryUsedBytes,
    MemoryUtilisation,
    NetRxBytesPerSecond,
    NetTxBytesPerSecond,
    DiskReadBytesPerSecond,
    DiskWriteBytesPerSecond,
}

/// A cgroup's quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupField {
    CpuCores,
    MemoryBytes,
}

/// A process's quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessField {
    CpuCores,
    RssBytes,
}

/// One host series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Series {
    Host(HostField),
    Cgroup {
        name: String,
        field: CgroupField,
    },
    Process {
        comm: String,
        pid: u32,
        field: ProcessField,
    },
    /// A hwmon or thermal-zone reading (host/sensors.rs).
    Sensor {
        chip: String,
        sensor: String,
        kind: SensorKind,
    },
}

/// A Prometheus gauge: its name and at most one label.
pub type Gauge = (&'static str, Option<(&'static str, String)>);

impl HostField {
    fn key(self) -> &'static str {
        match self {
            Self::CpuUtilisation => "host.cpu_utilisation",
            Self::MemoryUsedBytes => "host.memory_used_bytes",
            Self::MemoryUtilisation => "host.memory_utilisation",
            Self::NetRxBytesPerSecond => "host.net_rx_bytes_per_second",
            Self::NetTxBytesPerSecond => "host.net_tx_bytes_per_second",
            Self::DiskReadBytesPerSecond => "host.disk_read_bytes_per_second",
            Self::DiskWriteBytesPerSecond => "host.disk_write_bytes_per_second",
        }
    }

    fn gauge(self) -> &'static str {
        match self {
            Self::CpuUtilisation => names::HOST_CPU_UTILISATION,
            Self::MemoryUsedBytes => names::HOST_MEMORY_USED,
            Self::MemoryUtilisation => names::HOST_MEMORY_UTILISATION,
            Self::NetRxBytesPerSecond => names::HOST_NET_RX,
            Self::NetTxBytesPerSecond => names::HOST_NET_TX,
            Self::DiskReadBytesPerSecond => names::HOST_DISK_READ,
            Self::DiskWriteBytesPerSecond => names::HOST_DISK_WRITE,
        }
    }

    /// A rate, so only from the second sample on.
    pub fn is_rate(self) -> bool {
        !matches!(
            self,
            Self::CpuUtilisation | Self::MemoryUsedBytes | Self::MemoryUtilisation
        )
    }
}

impl Series {
    /// The series' name in the history and the APIs.
    pub fn key(&self) -> String {
        match self {
            Self::Host(f) => f.key().to_owned(),
            Self::Cgroup { name, field } => {
                let f = match field {
                    CgroupField::CpuCores => "cpu_cores",
                    CgroupField::MemoryBytes => "memory_bytes",
                };
                format!("cgroup.{name}.{f}")
            }
            Self::Process { comm, pid, field } => {
                let f = match field {
                    ProcessField::CpuCores => "cpu_cores",
                    ProcessField::RssBytes => "rss_bytes",
                };
                format!("process.{comm}[{pid}].{f}")
            }
            Self::Sensor { chip, sensor, kind } => {
                format!("sensor.{chip}.{}.{}", key_part(sensor), kind.unit())
            }
        }
    }

    /// The series' Prometheus gauge.
    pub fn gauge(&self) -> Gauge {
        match self {
            Self::Host(f) => (f.gauge(), None),
            Self::Cgroup { name, field } => {
                let g = match field {
                    CgroupField::CpuCores => names::CGROUP_CPU_CORES,
                    CgroupField::MemoryBytes => names::CGROUP_MEMORY,
                };
                (g, Some(("cgroup", name.clone())))
            }
            Self::Process { comm, pid, field } => {
                let g = match field {
                    ProcessField::CpuCores => names::PROCESS_CPU_CORES,
                    ProcessField::RssBytes => names::PROCESS_RSS,
                };
                (g, Some(("process", format!("{comm}[{pid}]"))))
            }
            Self::Sensor { chip, sensor, kind } => {
                let g = match kind {
                    SensorKind::Temperature => names::SENSOR_TEMPERATURE,
                    SensorKind::Voltage => names::SENSOR_VOLTAGE,
                    SensorKind::Fan => names::SENSOR_FAN,
                    SensorKind::Power => names::SENSOR_POWER,
                    SensorKind::Current => names::SENSOR_CURRENT,
                };
                (g, Some(("sensor", format!("{chip}/{sensor}"))))
            }
        }
    }
}

/// A label as part of a key: `Physical id 0` -> `physical_id_0`.
fn key_part(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_gauges() {
        let cpu = Series::Host(HostField::CpuUtilisation);
        assert_eq!(cpu.key(), "host.cpu_utilisation");
        assert_eq!(cpu.gauge(), ("shadow_host_cpu_utilisation", None));
        // A cgroup name with dots stays whole: nothing splits it again.
        let cg = Series::Cgroup {
            name: "system.slice".into(),
            field: CgroupField::CpuCores,
        };
        assert_eq!(cg.key(), "cgroup.system.slice.cpu_cores");
        assert_eq!(
            cg.gauge(),
            (
                "shadow_cgroup_cpu_cores",
                Some(("cgroup", "system.slice".into()))
            )
        );
        let p = Series::Process {
            comm: "nginx".into(),
            pid: 42,
            field: ProcessField::RssBytes,
        };
        assert_eq!(p.key(), "process.nginx[42].rss_bytes");
        let t = Series::Sensor {
            chip: "coretemp-2".into(),
            sensor: "Physical id 0".into(),
            kind: SensorKind::Temperature,
        };
        assert_eq!(t.key(), "sensor.coretemp-2.physical_id_0.celsius");
        assert_eq!(
            t.gauge(),
            (
                "shadow_sensor_temperature_celsius",
                Some(("sensor", "coretemp-2/Physical id 0".into()))
            )
        );
        assert_eq!(
            p.gauge(),
            (
                "shadow_process_rss_bytes",
                Some(("process", "nginx[42]".into()))
            )
        );
    }
}
