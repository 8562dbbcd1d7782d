//! Starts the real binary with a generated config in a temporary folder.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zkfire_testkit::ports::free_port;

pub struct TestServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    pub config_path: PathBuf,
}

/// The base configuration; `extra` adds or overrides `key = value` lines per section.
fn config_text(dir: &std::path::Path, port: u16, tls_port: u16, extra: &[(&str, &str)]) -> String {
    let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    sections.entry("server").or_default().extend([
        "domain = \"localhost\"".to_string(),
        format!("data_dir = \"{}\"", dir.join("data").display()),
        "log_level = \"debug\"".to_string(),
    ]);
    sections.entry("c2s").or_default().extend([
        format!("listen = [\"127.0.0.1:{port}\"]"),
        format!("tls_listen = [\"127.0.0.1:{tls_port}\"]"),
    ]);
    for (section, line) in extra {
        let key = line.split('=').next().unwrap_or("").trim();
        let lines = sections.entry(section).or_default();
        lines.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
        lines.push(line.to_string());
    }
    let mut out = String::new();
    for (section, lines) in sections {
        out.push_str(&format!("[{section}]\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// Runs `zkfire serve` on `config_path`, its log appended to `dir/zkfire.log`.
fn spawn(config_path: &std::path::Path, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("zkfire.log"))
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_zkfire"))
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start zkfire")
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with_config(&[])
    }

    pub fn with_config(extra: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let tls_port = free_port();
        let config_path = dir.path().join("zkfire.toml");
        std::fs::write(&config_path, config_text(dir.path(), port, tls_port, extra))
            .expect("config");
        let child = spawn(&config_path, dir.path());
        let mut server = TestServer {
            child: Some(child),
            dir,
            port,
            tls_port,
            config_path,
        };
        server.wait_ready();
        server
    }

    /// Stops the server (SIGTERM) and starts it again on the same config,
    /// data dir and ports; the log goes on in the same file.
    pub fn restart(&mut self) {
        assert!(self.stop(), "zkfire did not stop cleanly:\n{}", self.log());
        self.child = Some(spawn(&self.config_path, self.dir.path()));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("zkfire exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                panic!("zkfire did not start listening:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("zkfire.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                panic!("'{needle}' not in the log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = self.child.as_ref() {
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("data").join("tls").join("cert.pem")
    }

    /// Runs a CLI command against this server's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_zkfire"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run zkfire")
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.cli(&["user", "add", name, "--password", password]);
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit; returns whether it was clean
    /// (exit status 0, and no panic anywhere in the log).
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success() && !self.log().contains("panicked at");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the server said.
            eprintln!(
                "--- zkfire log ({}) ---\n{}",
                self.config_path.display(),
                self.log()
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
