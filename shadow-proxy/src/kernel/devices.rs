//! Block device names for the kernel's `dev_t` values.

use std::collections::HashMap;

/// The kernel-internal `dev_t` that block tracepoints report: major in the
/// high 12 bits, minor in the low 20.
pub fn split_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// Resolves and caches `major:minor` to a device name via `/sys/dev/block`.
#[derive(Debug, Default)]
pub struct DeviceNames {
    cache: HashMap<u32, String>,
}

impl DeviceNames {
    pub fn name(&mut self, dev: u32) -> String {
        self.cache
            .entry(dev)
            .or_insert_with(|| {
                let (major, minor) = split_dev(dev);
                let uevent = format!("/sys/dev/block/{major}:{minor}/uevent");
                std::fs::read_to_string(uevent)
                    .ok()
                    .and_then(|t| parse_devname(&t))
                    .unwrap_or_else(|| format!("{major}:{minor}"))
            })
            .clone()
    }
}

fn parse_devname(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kernel_dev_t() {
        // loop3 is 7:3; the kernel encodes MKDEV(7, 3) as 7 << 20 | 3.
        assert_eq!(split_dev((7 << 20) | 3), (7, 3));
    }

    #[test]
    fn reads_devname() {
        let t = "MAJOR=7\nMINOR=3\nDEVNAME=loop3\nDEVTYPE=disk\n";
        assert_eq!(parse_devname(t).as_deref(), Some("loop3"));
    }
}
