//! A throwaway Redis server for one test: `redis-server` on a random
//! loopback port, in a temp dir, with no persistence; stopped on drop.
//!
//! Without the binary the test is skipped with a printed reason, except
//! under `CI=true`, where that is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    // Dropped after the server stops.
    dir: TempDir,
}

fn binary() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|p| p.join("redis-server"))
        .find(|p| p.exists())
}

impl RedisServer {
    /// Starts a server, or explains why not (`None`: skip the test).
    pub fn start() -> Option<Self> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Some(bin) = binary() else {
            let reason =
                "redis-server not found; install it with `apt-get install -y redis-server`";
            assert!(!ci, "CI=true and {reason}");
            super::skip("a Redis test", reason);
            return None;
        };
        let mut server = Self {
            child: None,
            port: 0,
            bin,
            dir: TempDir::new("redis"),
        };
        // A port picked free can be taken before redis binds it: retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn_on_port() {
                return Some(server);
            }
        }
        panic!(
            "redis-server did not start after 5 attempts; its log:\n{}",
            server.log()
        );
    }

    fn spawn_on_port(&mut self) -> bool {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.ping() {
                // Ours, not another test's server that got the port first.
                return self.is_ours() || {
                    self.stop();
                    false
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// Whether the server on the port is the child this handle started.
    fn is_ours(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let info = self.command("INFO server");
        info.lines()
            .find_map(|l| l.trim().strip_prefix("process_id:"))
            .and_then(|p| p.parse::<u32>().ok())
            == Some(child.id())
    }

    /// What the server logged (for a failure message).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Sends one inline command; the reply as text: a bulk string's
    /// content, an integer as `:n`, an array's items one per line.
    pub fn command(&self, line: &str) -> String {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (&s).write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        read_reply(&mut BufReader::new(&s))
    }

    /// How many times a command ran, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.command("INFO commandstats");
        let tag = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&tag))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same port (empty: nothing
    /// was saved).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn_on_port() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not restart on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn stop(&mut self) {
        self.kill();
    }
}

/// One RESP reply, as [`RedisServer::command`] shows it.
fn read_reply(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    r.read_line(&mut head).expect("reply");
    let head = head.trim_end();
    let (kind, rest) = head.split_at(1);
    match kind {
        "$" => {
            let Ok(len) = rest.parse::<usize>() else {
                return String::new(); // $-1: nil
            };
            let mut body = vec![0u8; len + 2];
            r.read_exact(&mut body).expect("bulk");
            body.truncate(len);
            String::from_utf8_lossy(&body).into_owned()
        }
        "*" => {
            let n = rest.parse::<usize>().unwrap_or(0);
            (0..n).map(|_| read_reply(r)).collect::<Vec<_>>().join("\n")
        }
        _ => head.to_string(),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
