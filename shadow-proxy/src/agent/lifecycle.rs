//! Start-up and shutdown hygiene: one agent per pid file, and leftovers of
//! a killed run cleaned before anything is attached.
//!
//! Tracepoint links are file descriptors of the agent process, so the kernel
//! detaches them when the process dies, however it dies. What can outlive a
//! killed agent is on disk: its pid file and any pins under [`PIN_DIR`].

use std::path::{Path, PathBuf};

/// bpffs directory where shadow would pin objects; removed on start.
pub const PIN_DIR: &str = "/sys/fs/bpf/shadow";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("another shadow agent (pid {pid}) is running; pid file {path}")]
    AlreadyRunning { pid: u32, path: PathBuf },
    #[error("pid file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pid file is the agent's own.
impl crate::util::Sourced for LifecycleError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// Holds the pid file for the life of the agent; removes it on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<Self, LifecycleError> {
        let io = |source| LifecycleError::Io {
            path: path.to_owned(),
            source,
        };
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            if pid != std::process::id() && is_agent(pid) {
                return Err(LifecycleError::AlreadyRunning {
                    pid,
                    path: path.to_owned(),
                });
            }
            tracing::warn!(pid, path = %path.display(), "Cleaning up after an agent that did not exit cleanly");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(io)?;
        remove_pins();
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn is_agent(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "shadow-proxy")
        .unwrap_or(false)
}

fn remove_pins() {
    if Path::new(PIN_DIR).exists() {
        match std::fs::remove_dir_all(PIN_DIR) {
            Ok(()) => tracing::warn!(
                dir = PIN_DIR,
                "Removed pinned objects left by an earlier run"
            ),
            Err(error) => tracing::warn!(%error, dir = PIN_DIR, "Could not remove leftover pins"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_pid_file_is_taken_over_and_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("shadow-pid-{}", std::process::id()));
        let path = dir.join("agent.pid");
        std::fs::create_dir_all(&dir).unwrap();
        // pid 0 never names a running agent.
        std::fs::write(&path, "0\n").unwrap();
        let held = PidFile::acquire(&path).expect("stale pid file must be taken over");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(held);
        assert!(!path.exists(), "pid file must be removed on drop");
        let _ = std::fs::remove_dir_all(dir);
    }
}
