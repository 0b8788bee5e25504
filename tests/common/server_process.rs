//! The example server as a process of its own: found next to the test
//! binary, started on a free loopback port, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The example binary next to this test's directory, or `None` (skip,
/// but never under `CI=true`).
pub fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-… → target/<profile>/examples/server
    let path = exe.parent()?.parent()?.join("examples").join("server");
    if path.exists() {
        return Some(path);
    }
    let reason = format!(
        "{} is not built; `cargo test --all-features` builds it",
        path.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {reason}"
    );
    super::skip("an example-process test", &reason);
    None
}

/// One server process; killed on drop.
pub struct Instance {
    pub child: Child,
    /// Its URL, once it listens.
    pub base: String,
    /// The line saying where it listens, and on what.
    pub listening: String,
    /// Every line it printed, as it prints them.
    pub lines: mpsc::Receiver<String>,
    /// Where its log goes, for a failure message.
    pub log: super::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// Starts `bin` with `PORT=0` (a free port), the environment `env`
    /// and the arguments `args`; its stdout is read line by line.
    pub fn spawn(bin: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let log = super::TempDir::new("server-process");
        let stderr = std::fs::File::create(log.path().join("stderr")).expect("log file");
        let mut child = Command::new(bin)
            .env("PORT", "0")
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the example server");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            base: String::new(),
            listening: String::new(),
            lines,
            log,
        }
    }

    /// What it logged so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(self.log.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for "listening on http://…" and notes the URL; the
    /// bootstrap token, if this instance printed one.
    pub fn started(&mut self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut token = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let log = std::fs::read_to_string(self.log.path().join("stderr"));
                panic!(
                    "the server did not start; it logged:\n{}",
                    log.unwrap_or_default()
                );
            };
            let line = line.trim();
            if line.starts_with("sk_") {
                token = Some(line.to_string());
            }
            if let Some(rest) = line.strip_prefix("listening on ") {
                self.listening = line.to_string();
                self.base = rest.split_whitespace().next().expect("a URL").to_string();
                return token;
            }
        }
    }
}
