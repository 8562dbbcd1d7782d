//! Private ZooKeeper servers for tests, from Debian's `zookeeper` package: a
//! standalone server or an ensemble of n members, each in its own temporary
//! folder, every port on 127.0.0.1 and picked free. Nothing depends on (or
//! touches) a ZooKeeper already running.
//!
//! Debian's `zkServer.sh` cannot be used: it sources
//! `/etc/zookeeper/conf/environment`, which forces the log dir to
//! `/var/log/zookeeper` and a classpath without an slf4j binding. We start
//! `java` ourselves, as that script would, with `slf4j-simple` added so the
//! server's log (stderr) lands in `zookeeper.log` in the member's folder.
//!
//! zkfire's own managed peer (`zkfire::cluster::zk_managed`) builds a similar
//! command; it is not reused here because that would make the testkit depend
//! on the crate it tests. Both are small.
//!
//! Every wait is bounded, and so is every 4lw probe ([`four_letter`]): a
//! probe that connects while the server starts can otherwise hang.
//!
//! Servers are stopped (SIGTERM, then SIGKILL) and their folders removed when
//! dropped. A test process killed outright leaves them running; their folders
//! start with `zkfire-zk-` in the temporary directory.

use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's jar; its manifest's Class-Path names every dependency
/// (zookeeper-jute, netty, slf4j-api, ...), so the classpath stays short.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// slf4j binding: without one, ZooKeeper logs nothing at all.
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// Debian's config folder; only its log4j.properties, harmless, is read
/// from the classpath. Kept because Debian's own command has it.
const CONF_DIR: &str = "/etc/zookeeper/conf";
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Until `ruok` answers after a start (the reference machine: about 1.3 s).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Until every member of a fresh ensemble serves (reference: 4.5-6.8 s for 3).
const ENSEMBLE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL (a clean stop takes about 2 s).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Free ports can be taken by someone else before ZooKeeper binds them.
const START_ATTEMPTS: usize = 4;
const POLL: Duration = Duration::from_millis(100);

/// Sends a four-letter-word command (`ruok`, `srvr`, `stat`, `mntr`) to the
/// client port on 127.0.0.1 and returns the answer; `None` when nothing
/// answers within about 3 s in all.
pub fn four_letter(port: u16, command: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
        if answer.len() > 1 << 20 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// The `Mode:` of a `srvr` answer (`leader`, `follower`, `standalone`, ...);
/// `None` while the server does not serve.
pub fn server_mode(port: u16) -> Option<String> {
    let answer = four_letter(port, "srvr")?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

fn answers_ruok(port: u16) -> bool {
    four_letter(port, "ruok").as_deref() == Some("imok")
}

fn serves(port: u16) -> bool {
    matches!(
        server_mode(port).as_deref(),
        Some("leader" | "follower" | "standalone")
    )
}

/// The java command that runs ZooKeeper: `java` on the PATH and Debian's jars.
#[derive(Debug, Clone)]
struct Installation {
    classpath: String,
}

fn find_installation() -> Result<Installation> {
    if !Path::new(ZOOKEEPER_JAR).is_file() {
        bail!(
            "ZooKeeper not found ({ZOOKEEPER_JAR} is missing): install the Debian package \
             `zookeeper` (apt-get install -y zookeeper)"
        );
    }
    let parts = [CONF_DIR, ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR];
    let classpath = parts
        .iter()
        .filter(|p| Path::new(p).exists())
        .copied()
        .collect::<Vec<_>>()
        .join(":");
    Ok(Installation { classpath })
}

/// One ZooKeeper process: its folder (zoo.cfg, data/, zookeeper.log) and the
/// child while it runs.
struct Peer {
    dir: PathBuf,
    client_port: u16,
    child: Option<Child>,
}

impl Peer {
    fn new(dir: PathBuf, client_port: u16) -> Peer {
        Peer {
            dir,
            client_port,
            child: None,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// Writes the config (and `myid` for an ensemble member).
    fn configure(&self, myid: Option<usize>, servers: &str) -> Result<()> {
        let data = self.dir.join("data");
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        if let Some(id) = myid {
            fs::write(data.join("myid"), format!("{id}\n"))?;
        }
        let text = format!(
            "tickTime=2000\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
             admin.enableServer=false\n\
             {servers}",
            data = data.display(),
            port = self.client_port,
        );
        fs::write(self.dir.join("zoo.cfg"), text)?;
        Ok(())
    }

    fn spawn(&mut self, installation: &Installation) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let child = Command::new("java")
            .args(["-Xmx256m", "-XX:+UseSerialGC"])
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.display()))
            .args(["-cp", &installation.classpath, MAIN_CLASS])
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!(
                        "`java` is not on the PATH: install the Debian package `zookeeper` \
                         (it brings a Java runtime)"
                    )
                } else {
                    anyhow::Error::new(e).context("starting java")
                }
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status once the process has ended (it is then forgotten).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Sends SIGTERM (no-op when not running).
    fn signal_term(&self) {
        if let Some(child) = &self.child {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: plain syscall; the child has not been reaped (we hold
                // it un-waited), so the pid is still ours.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }

    /// Waits until the process is gone, SIGKILLing it at `deadline`.
    fn reap(&mut self, deadline: Instant) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
    }

    fn stop(&mut self) {
        self.signal_term();
        self.reap(Instant::now() + STOP_GRACE);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn bind_failed(&self) -> bool {
        fs::read_to_string(self.log_path())
            .map(|t| t.contains("Address already in use"))
            .unwrap_or(false)
    }

    /// Error for a process that ended while we waited for it.
    fn died(&self, status: ExitStatus) -> anyhow::Error {
        anyhow::anyhow!(
            "ZooKeeper exited ({status}); log {}:\n{}",
            self.log_path().display(),
            self.log_tail()
        )
    }
}

fn temp_folder() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("zkfire-zk-")
        .tempdir()
        .context("creating a temporary folder for ZooKeeper")
}

/// `count` distinct free ports (free_port may hand out a port twice).
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    let mut order = Vec::with_capacity(count);
    while order.len() < count {
        let port = free_port();
        if ports.insert(port) {
            order.push(port);
        }
    }
    order
}

/// A standalone ZooKeeper server on a free port of 127.0.0.1.
pub struct ZooKeeper {
    peer: Peer,
    // Declared last: removed after the process is stopped.
    dir: TempDir,
}

impl ZooKeeper {
    /// Starts a server and waits until it answers `ruok` and serves (about
    /// 1.3 s).
    pub fn standalone() -> Result<ZooKeeper> {
        let installation = find_installation()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir = temp_folder()?;
            let mut peer = Peer::new(dir.path().to_path_buf(), free_port());
            peer.configure(None, "")?;
            peer.spawn(&installation)?;
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                // `ruok` answers as soon as the port is open, a moment
                // before requests are served: wait for the latter.
                if answers_ruok(peer.client_port) && serves(peer.client_port) {
                    return Ok(ZooKeeper { peer, dir });
                }
                if let Some(status) = peer.exit_status() {
                    let error = peer.died(status);
                    if !peer.bind_failed() {
                        return Err(error);
                    }
                    last_error = Some(error);
                    break;
                }
                if Instant::now() > deadline {
                    let tail = peer.log_tail();
                    peer.kill();
                    bail!("ZooKeeper did not serve within {READY_TIMEOUT:?}; log:\n{tail}");
                }
                std::thread::sleep(POLL);
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("ZooKeeper did not start")))
    }

    pub fn port(&self) -> u16 {
        self.peer.client_port
    }

    /// `127.0.0.1:PORT`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.peer.client_port)
    }

    /// The server's folder (zoo.cfg, data/, zookeeper.log).
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// The server process id.
    pub fn pid(&self) -> Option<u32> {
        self.peer.child.as_ref().map(Child::id)
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.peer.stop();
    }
}

/// An ensemble of n members, all on 127.0.0.1. Member `i` (0-based) is
/// `server.{i+1}` in zoo.cfg.
pub struct Ensemble {
    installation: Installation,
    members: Vec<Peer>,
    // Declared last: removed after the processes are stopped.
    dir: TempDir,
}

impl Ensemble {
    /// Starts n members and waits until every one serves (a leader and n-1
    /// followers; about 5-7 s for 3).
    pub fn start(n: usize) -> Result<Ensemble> {
        if n == 0 {
            bail!("an ensemble needs at least one member");
        }
        let installation = find_installation()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut ensemble = Ensemble::configure(installation.clone(), n)?;
            match ensemble.start_all() {
                Ok(()) => return Ok(ensemble),
                Err(e) => {
                    // Someone took one of our ports: try others.
                    if !ensemble.members.iter().any(Peer::bind_failed) {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the ensemble did not start")))
    }

    fn configure(installation: Installation, n: usize) -> Result<Ensemble> {
        let dir = temp_folder()?;
        // Per member: client, peer (quorum) and election port.
        let ports = distinct_free_ports(3 * n);
        // standaloneEnabled=false: even one member runs as a quorum with a
        // leader, so `leader()` means the same for every n.
        let mut servers = String::from("standaloneEnabled=false\n");
        for i in 0..n {
            let (peer, election) = (ports[3 * i + 1], ports[3 * i + 2]);
            servers.push_str(&format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1));
        }
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let peer = Peer::new(dir.path().join(format!("zk{}", i + 1)), ports[3 * i]);
            peer.configure(Some(i + 1), &servers)?;
            members.push(peer);
        }
        Ok(Ensemble {
            installation,
            members,
            dir,
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member: `127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// The ensemble's folder: `zkN/` per member (zoo.cfg, data/, zookeeper.log).
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// The member's `Mode:` (`leader`, `follower`); `None` while it does not serve.
    pub fn mode(&self, i: usize) -> Option<String> {
        server_mode(self.members[i].client_port)
    }

    pub fn is_serving(&self, i: usize) -> bool {
        serves(self.members[i].client_port)
    }

    /// Whether member i's process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].running()
    }

    /// The member that says it leads, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.mode(i).as_deref() == Some("leader"))
    }

    /// Waits until some member leads and returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until member i serves (it needs a running majority for that).
    pub fn wait_member_serving(&mut self, i: usize, timeout: Duration) -> Result<()> {
        self.wait_serving(&[i], timeout)
    }

    fn wait_serving(&mut self, which: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for &i in which {
                let member = &mut self.members[i];
                if let Some(status) = member.exit_status() {
                    return Err(member.died(status).context(format!("member {i}")));
                }
                if member.child.is_none() {
                    bail!("member {i} is not running");
                }
                all &= serves(member.client_port);
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                let modes: Vec<String> = which
                    .iter()
                    .map(|&i| format!("{i}: {:?}", self.mode(i)))
                    .collect();
                bail!(
                    "members did not serve within {timeout:?} ({}); folder {}",
                    modes.join(", "),
                    self.dir.path().display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM to member i; returns once it has exited (SIGKILL after a grace).
    pub fn stop_member(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// SIGKILL to member i; returns once it has exited.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member i again with its config and data; does not wait for it
    /// to serve (it cannot without a majority): see `wait_member_serving`.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let installation = self.installation.clone();
        self.members[i].spawn(&installation)
    }

    /// Stops every member (SIGTERM to all at once, SIGKILL after a grace).
    pub fn stop_all(&mut self) {
        for member in &self.members {
            member.signal_term();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for member in &mut self.members {
            member.reap(deadline);
        }
    }

    /// Starts every member not running and waits until all serve.
    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.start_member(i)?;
        }
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.wait_serving(&all, ENSEMBLE_READY_TIMEOUT)
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        self.stop_all();
    }
}
