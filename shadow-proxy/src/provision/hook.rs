//! The exec hook: the change as JSON on the command's stdin, a timeout,
//! and the exit code decides. The Kubernetes recipe (README) is a hook
//! that runs `kubectl scale` or `kubectl patch` with the plan's numbers.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::backend::{Backend, BackendError, Change};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHook {
    /// The program and its arguments.
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// How much of a failing hook's stderr an error keeps.
const STDERR_KEEP: usize = 2048;

impl ExecHook {
    /// The program as it will run: a path, or the first executable of that
    /// name on `PATH`; `None` if there is none.
    pub fn resolve(program: &str) -> Option<PathBuf> {
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if program.contains('/') {
            let p = PathBuf::from(program);
            return executable(&p).then_some(p);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| executable(p))
    }

    fn label(&self) -> String {
        self.command.join(" ")
    }

    /// Runs the hook with `input` on stdin; kills it at the timeout.
    pub fn run(&self, input: &[u8]) -> Result<(), BackendError> {
        let io = |what: &str| {
            let what = format!("{what} hook {}", self.label());
            move |source| BackendError::Io { what, source }
        };
        let (program, args) = self.command.split_first().ok_or_else(|| BackendError::Io {
            what: "running the exec hook".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting"))?;
        // A hook may exit without reading its stdin: a broken pipe is not its failure.
        if let Some(mut stdin) = child.stdin.take() {
            match stdin.write_all(input) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(io("writing to")(e));
                }
                _ => {}
            }
        }
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io("waiting for"))? {
                break status;
            }
            if started.elapsed() >= self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Timeout {
                    command: self.label(),
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let cut = stderr.len().saturating_sub(STDERR_KEEP);
        let cut = (cut..stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(0);
        Err(BackendError::Exit {
            command: self.label(),
            status: status.to_string(),
            stderr: stderr[cut..].trim().to_string(),
        })
    }
}

impl Backend for ExecHook {
    fn apply(&self, change: &Change<'_>) -> Result<(), BackendError> {
        let json = serde_json::to_vec(change).map_err(|e| BackendError::Io {
            what: "encoding the plan".into(),
            source: std::io::Error::other(e),
        })?;
        self.run(&json)
    }

    fn name(&self) -> &'static str {
        "exec"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> ExecHook {
        ExecHook {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn the_plan_arrives_on_stdin_and_exit_zero_is_success() {
        let out = std::env::temp_dir().join(format!("shadow-hook-{}.json", std::process::id()));
        let hook = sh(&format!("cat > {}", out.display()), 5000);
        hook.run(br#"{"target":"web","to":4}"#).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got["to"], 4);
        std::fs::remove_file(out).unwrap();
    }

    #[test]
    fn a_failing_hook_reports_its_status_and_stderr() {
        let err = sh("echo 'quota exceeded' >&2; exit 3", 5000)
            .run(b"{}")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("exit status: 3") && text.contains("quota exceeded"),
            "{text}"
        );
        assert_eq!(err.kind(), "exit");
    }

    #[test]
    fn a_hung_hook_is_killed_at_its_timeout() {
        let started = Instant::now();
        let err = sh("sleep 30", 300).run(b"{}").unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn programs_resolve_on_the_path_or_not_at_all() {
        assert!(ExecHook::resolve("sh").is_some());
        assert!(ExecHook::resolve("/bin/sh").is_some());
        assert!(ExecHook::resolve("shadow-no-such-hook").is_none());
        use std::os::unix::fs::PermissionsExt;
        let plain = std::env::temp_dir().join(format!("shadow-hook-plain-{}", std::process::id()));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = ExecHook::resolve(plain.to_str().unwrap());
        std::fs::remove_file(&plain).unwrap();
        assert!(found.is_none(), "not executable");
    }
}
