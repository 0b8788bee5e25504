//! A throwaway PostgreSQL server for one test: `initdb` into a temp dir,
//! `postgres` on a random loopback port, stopped and removed on drop.
//!
//! Without the server binaries the test is skipped with a printed reason,
//! except under `CI=true`, where that is a failure.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    data: PathBuf,
    // Dropped after the server stops.
    _dir: TempDir,
}

fn bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    // Newest major version first (directory names are numbers).
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = dirs.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
    })
}

fn id_of(flag: &str, user: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// PostgreSQL refuses to run as root: as root, run it as `postgres`.
fn command(bin: &Path, name: &str, run_as: Option<(u32, u32)>) -> Command {
    match run_as {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(bin.join(name));
            c
        }
        None => Command::new(bin.join(name)),
    }
}

impl PgServer {
    /// Starts a server, or explains why not (`None`: skip the test).
    pub fn start() -> Option<Self> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Some(bin) = bindir() else {
            let reason = "PostgreSQL server binaries (initdb, postgres) not found; \
                          install them with `apt-get install -y postgresql`";
            assert!(!ci, "CI=true and {reason}");
            super::skip("a PostgreSQL test", reason);
            return None;
        };
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let run_as = if root {
            let ids = id_of("-u", "postgres").zip(id_of("-g", "postgres"));
            assert!(
                ids.is_some(),
                "running as root needs a `postgres` user to run the server"
            );
            ids
        } else {
            None
        };
        let dir = TempDir::new("pg");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).expect("chown");
        }
        let out = command(&bin, "initdb", run_as)
            .arg("-D")
            .arg(&data)
            .args(["-U", "keyward", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C.UTF-8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            child: None,
            port: 0,
            bin,
            run_as,
            data,
            _dir: dir,
        };
        // A port picked free can be taken before postgres binds it: retry.
        for _ in 0..5 {
            if server.launch() {
                return Some(server);
            }
        }
        panic!("postgres did not start after 5 attempts");
    }

    fn launch(&mut self) -> bool {
        self.port = free_port();
        self.spawn_on_port()
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) -> bool {
        self.stop();
        self.spawn_on_port()
    }

    fn spawn_on_port(&mut self) -> bool {
        let child = command(&self.bin, "postgres", self.run_as)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    /// A URL for database `postgres` as superuser `keyward`.
    pub fn url(&self) -> String {
        format!("postgres://keyward@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server now (fast shutdown), e.g. to test an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
