//! What the CLI's stack tests share: the real `ctwa` binary run in an empty directory
//! that is its HOME, with only the variables given (nothing of the machine leaks in),
//! and what it did.
// Each test file uses the part it needs.
#![allow(dead_code)]

use ctwa_tests::unique;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        self.exit(0)
    }
    #[track_caller]
    pub fn exit(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// An empty directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir() -> TempDir {
    let d = std::env::temp_dir().join(unique("ctwa-cli-test"));
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

/// Runs `cmd` to its end, off the async runtime's threads.
pub async fn run(mut cmd: std::process::Command) -> Run {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the command runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ctwa args...` in `dir` with HOME=`dir` and only the variables given.
pub async fn ctwa_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ctwa"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .envs(env.iter().copied());
    run(cmd).await
}

/// `ctwa args...` with the API's `url` and `key` in the environment, in a fresh empty
/// directory.
pub async fn ctwa_as(url: &str, key: &str, args: &[&str]) -> Run {
    let dir = temp_dir();
    ctwa_in(&dir, &[("CTWA_API_URL", url), ("CTWA_API_KEY", key)], args).await
}
