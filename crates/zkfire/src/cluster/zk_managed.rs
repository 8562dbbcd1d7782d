//! A ZooKeeper peer run by this node itself (`[zookeeper.managed]`), as the
//! old project's `<zoo>` section did: zkfire writes `zoo.cfg` and `myid` into
//! the data dir, runs ZooKeeper's `java` as a child process, restarts it with
//! backoff when it dies, and stops it (SIGTERM, then SIGKILL) on shutdown.
//!
//! The installation is Debian's `zookeeper` package by default, or an
//! upstream release folder (`zookeeper_home`). Debian's `zkServer.sh` is not
//! used: it sources `/etc/zookeeper/conf/environment`, which forces the log
//! dir to `/var/log/zookeeper` and a classpath without an slf4j binding (the
//! server would log nothing). We build the same java command ourselves.
//!
//! In an ensemble a member serves clients only once a quorum of members runs,
//! so [`ManagedZooKeeper::start`] returns as soon as the process answers
//! `ruok` (its client port is open); [`ManagedZooKeeper::wait_serving`] waits
//! for the quorum.

use crate::config::ManagedZooKeeperConfig;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Where Debian's packages put things. The zookeeper.jar manifest's
/// Class-Path names its dependencies (zookeeper-jute, netty, slf4j-api, ...),
/// so the jar alone is enough, plus an slf4j binding for logs.
pub const DEBIAN_ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
pub const DEBIAN_SLF4J_BINDING: &str = "/usr/share/java/slf4j-simple.jar";
pub const DEBIAN_CONF_DIR: &str = "/etc/zookeeper/conf";

/// The 4lw commands zkfire needs (`ruok`, `srvr`) and those useful for
/// monitoring; nothing that changes state or dumps sessions.
const FOUR_LETTER_WHITELIST: &str = "ruok,srvr,stat,mntr";

/// Until `ruok` answers after the first start. ZooKeeper needs about 1.3 s;
/// a standalone peer loads its snapshot before it answers, which can take
/// long on a big database.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL; a clean stop takes about 2 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Restart backoff: doubles from MIN to MAX, back to MIN once a run lasted
/// HEALTHY_RUN.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// One 4lw probe, connect to last byte.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(200);
/// zookeeper.log is moved to zookeeper.log.1 at a (re)start beyond this size
/// (slf4j-simple does not rotate).
const MAX_LOG_BYTES: u64 = 64 << 20;

const CFG_FILE: &str = "zoo.cfg";
const LOG_FILE: &str = "zookeeper.log";
const PID_FILE: &str = "zookeeper.pid";

/// zoo.cfg keys that have their own field in `[zookeeper.managed]`; `extra`
/// may not set them (the field would silently lose).
const RESERVED_KEYS: &[(&str, &str)] = &[
    ("tickTime", "tick_time"),
    ("initLimit", "init_limit"),
    ("syncLimit", "sync_limit"),
    ("dataDir", "data_dir"),
    ("clientPort", "client_port"),
    ("clientPortAddress", "client_address"),
];

/// The java binary and the classpath that run ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub java: PathBuf,
    pub classpath: Vec<PathBuf>,
    /// Whether an slf4j binding was found; without one ZooKeeper logs nothing.
    pub logs: bool,
}

/// Finds java and ZooKeeper's jars: `zookeeper_home` when set, else Debian's
/// `zookeeper` package.
pub fn find_installation(config: &ManagedZooKeeperConfig) -> Result<Installation> {
    let debian = DebianPaths {
        zookeeper_jar: PathBuf::from(DEBIAN_ZOOKEEPER_JAR),
        slf4j_binding: PathBuf::from(DEBIAN_SLF4J_BINDING),
        conf_dir: PathBuf::from(DEBIAN_CONF_DIR),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let java = find_java(config.java.as_deref(), &path)?;
    let (classpath, logs) = match &config.zookeeper_home {
        Some(home) => home_classpath(home)?,
        None => debian_classpath(&debian)?,
    };
    if let Err(e) = std::env::join_paths(&classpath) {
        bail!("[zookeeper.managed] zookeeper_home: cannot build a classpath: {e}");
    }
    Ok(Installation {
        java,
        classpath,
        logs,
    })
}

struct DebianPaths {
    zookeeper_jar: PathBuf,
    slf4j_binding: PathBuf,
    conf_dir: PathBuf,
}

fn find_java(configured: Option<&Path>, path_var: &std::ffi::OsStr) -> Result<PathBuf> {
    if let Some(java) = configured {
        if java.components().count() > 1 {
            if !java.is_file() {
                bail!(
                    "[zookeeper.managed] java: {} does not exist",
                    java.display()
                );
            }
            return Ok(java.to_path_buf());
        }
    }
    let name = configured.unwrap_or(Path::new("java"));
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{} is not on the PATH: install a Java runtime (Debian's `zookeeper` \
                 package brings one) or set [zookeeper.managed] java",
                name.display()
            )
        })
}

fn debian_classpath(debian: &DebianPaths) -> Result<(Vec<PathBuf>, bool)> {
    if !debian.zookeeper_jar.is_file() {
        bail!(
            "ZooKeeper is not installed: {} is missing. Install the Debian package \
             `zookeeper` (apt-get install zookeeper), or set [zookeeper.managed] \
             zookeeper_home to an Apache ZooKeeper release folder",
            debian.zookeeper_jar.display()
        );
    }
    let mut classpath = Vec::new();
    if debian.conf_dir.is_dir() {
        classpath.push(debian.conf_dir.clone());
    }
    classpath.push(debian.zookeeper_jar.clone());
    let logs = debian.slf4j_binding.is_file();
    if logs {
        classpath.push(debian.slf4j_binding.clone());
    }
    Ok((classpath, logs))
}

/// An Apache release folder: `conf/`, `lib/*.jar` (ZooKeeper, its
/// dependencies and logback) and possibly jars in the folder itself.
fn home_classpath(home: &Path) -> Result<(Vec<PathBuf>, bool)> {
    if !home.is_dir() {
        bail!(
            "[zookeeper.managed] zookeeper_home: {} is not a folder",
            home.display()
        );
    }
    let mut jars = Vec::new();
    for dir in [home.to_path_buf(), home.join("lib")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jar") && path.is_file() {
                jars.push(path);
            }
        }
    }
    jars.sort();
    let file_name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let has_server = jars.iter().any(|j| {
        let name = file_name(j);
        name.starts_with("zookeeper") && !name.starts_with("zookeeper-jute")
    });
    if !has_server {
        bail!(
            "[zookeeper.managed] zookeeper_home: no zookeeper*.jar in {} or its lib folder",
            home.display()
        );
    }
    let logs = jars.iter().any(|j| {
        let name = file_name(j);
        name.starts_with("logback-classic")
            || (name.starts_with("slf4j-") && !name.starts_with("slf4j-api"))
    });
    let mut classpath = Vec::new();
    if home.join("conf").is_dir() {
        classpath.push(home.join("conf"));
    }
    classpath.extend(jars);
    Ok((classpath, logs))
}

/// The text of zoo.cfg for `config`, with `data_dir` (absolute) as dataDir.
/// Refuses values that would change the meaning of the file (line breaks,
/// keys that have their own field).
pub fn zoo_cfg_text(config: &ManagedZooKeeperConfig, data_dir: &Path) -> Result<String> {
    validate(config)?;
    let data_dir = data_dir
        .to_str()
        .ok_or_else(|| anyhow!("data_dir {} is not UTF-8", data_dir.display()))?;
    let mut entries: Vec<(String, String)> = vec![
        ("tickTime".into(), config.tick_time.to_string()),
        ("initLimit".into(), config.init_limit.to_string()),
        ("syncLimit".into(), config.sync_limit.to_string()),
        ("dataDir".into(), data_dir.to_string()),
        ("clientPort".into(), config.client_port.to_string()),
        ("clientPortAddress".into(), config.client_address.clone()),
    ];
    // Defaults that `extra` may override: the admin server would open
    // 8080 on every address, so it is off unless asked for.
    let mut defaults: BTreeMap<&str, String> = BTreeMap::new();
    defaults.insert("4lw.commands.whitelist", FOUR_LETTER_WHITELIST.into());
    defaults.insert("admin.enableServer", "false".into());
    for (key, value) in &config.extra {
        if key == "4lw.commands.whitelist" {
            defaults.insert("4lw.commands.whitelist", with_required_4lw(value));
        } else if key == "admin.enableServer" {
            defaults.insert("admin.enableServer", value.clone());
        }
    }
    for (key, value) in defaults {
        entries.push((key.to_string(), value));
    }
    let mut servers: Vec<(u64, &String)> = config
        .servers
        .iter()
        .map(|(id, addr)| Ok((parse_server_id(id)?, addr)))
        .collect::<Result<_>>()?;
    servers.sort();
    for (id, addr) in servers {
        entries.push((format!("server.{id}"), addr.clone()));
    }
    for (key, value) in &config.extra {
        if key != "4lw.commands.whitelist" && key != "admin.enableServer" {
            entries.push((key.clone(), value.clone()));
        }
    }
    let mut text = String::from(
        "# Written by zkfire from [zookeeper.managed] at every start: edit the zkfire config instead.\n",
    );
    for (key, value) in entries {
        let _ = writeln!(text, "{key}={}", escape_property(&value));
    }
    Ok(text)
}

/// `ruok` and `srvr` are what zkfire probes with; keep them in a custom list.
fn with_required_4lw(list: &str) -> String {
    let mut words: Vec<String> = list
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if words.iter().any(|w| w == "*") {
        return "*".into();
    }
    for required in ["ruok", "srvr"] {
        if !words.iter().any(|w| w == required) {
            words.push(required.into());
        }
    }
    words.join(",")
}

/// java.util.Properties reads `\` as an escape character.
fn escape_property(value: &str) -> String {
    value.replace('\\', "\\\\")
}

fn parse_server_id(id: &str) -> Result<u64> {
    match id.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("[zookeeper.managed.servers] '{id}': ids are whole numbers from 1"),
    }
}

fn validate(config: &ManagedZooKeeperConfig) -> Result<()> {
    let fail = |m: String| Err(anyhow!("[zookeeper.managed] {m}"));
    if config.tick_time == 0 || config.init_limit == 0 || config.sync_limit == 0 {
        return fail("tick_time, init_limit and sync_limit must be above 0".into());
    }
    if config.client_port == 0 {
        return fail("client_port must be set".into());
    }
    if config.client_address.is_empty() || !is_plain_value(&config.client_address) {
        return fail(format!(
            "client_address '{}' is not an address",
            config.client_address
        ));
    }
    if !config.heap.is_empty() && !is_heap_size(&config.heap) {
        return fail(format!(
            "heap '{}' is not a Java heap size such as 256m or 2g",
            config.heap
        ));
    }
    let mut ids = Vec::new();
    for (id, addr) in &config.servers {
        ids.push(parse_server_id(id)?);
        // host:peerPort:electionPort, optionally :role and ;clientAddr:port
        if !is_plain_value(addr) || addr.split(':').count() < 3 {
            return fail(format!(
                "servers.{id} '{addr}' is not host:peerPort:electionPort"
            ));
        }
    }
    if !ids.is_empty() && !ids.contains(&u64::from(config.myid)) {
        return fail(format!(
            "myid {} is not among the servers ({})",
            config.myid,
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (key, value) in &config.extra {
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !key_ok {
            return fail(format!("extra: '{key}' is not a zoo.cfg key"));
        }
        if let Some((_, field)) = RESERVED_KEYS.iter().find(|(k, _)| k == key) {
            return fail(format!("extra: set {key} with the field {field}"));
        }
        if key.starts_with("server.") {
            return fail(format!("extra: set {key} in [zookeeper.managed.servers]"));
        }
        if value.chars().any(char::is_control) {
            return fail(format!("extra.{key}: line breaks are not allowed"));
        }
    }
    Ok(())
}

/// No whitespace or control characters: anything else could add a line or a
/// key to zoo.cfg.
fn is_plain_value(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_heap_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    s.len() - digits.len() <= 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The java command line for a peer whose zoo.cfg is in `data_dir`.
pub fn java_command(
    installation: &Installation,
    config: &ManagedZooKeeperConfig,
    data_dir: &Path,
) -> Command {
    let mut cmd = Command::new(&installation.java);
    if !config.heap.is_empty() {
        cmd.arg(format!("-Xmx{}", config.heap));
    }
    // Out of memory: exit, and the supervisor starts a fresh JVM (Debian
    // does the same with -XX:OnOutOfMemoryError='kill -9 %p').
    cmd.arg("-XX:+ExitOnOutOfMemoryError")
        .arg(format!("-Dzookeeper.log.dir={}", data_dir.display()))
        // Only read by slf4j-simple: timestamps in zookeeper.log.
        .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
        .arg("-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSXXX")
        .arg("-cp")
        .arg(std::env::join_paths(&installation.classpath).unwrap_or_default())
        .arg(MAIN_CLASS)
        .arg(data_dir.join(CFG_FILE))
        .current_dir(data_dir)
        .stdin(Stdio::null())
        // Should this task be dropped without a stop (the runtime ends),
        // the JVM goes with it.
        .kill_on_drop(true);
    cmd
}

/// Sends a four-letter-word command (`ruok`, `srvr`, `mntr`, ...) and returns
/// the answer. Bounded by `timeout` from connect to the last byte: a probe
/// that connects while the server starts can otherwise hang.
pub async fn four_letter(
    host: &str,
    port: u16,
    command: &str,
    timeout: Duration,
) -> Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(command.as_bytes()).await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        (&mut stream).take(1 << 20).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(anyhow!("{command} to {host}:{port}: {e}")),
        Err(_) => Err(anyhow!(
            "{command} to {host}:{port}: no answer within {timeout:?}"
        )),
    }
}

/// The `Mode:` line of a `srvr` answer (`leader`, `follower`, `standalone`,
/// `observer`); `None` while the peer does not serve.
pub fn mode_of(srvr_answer: &str) -> Option<&str> {
    srvr_answer
        .lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(str::trim)
}

/// The host probes and clients use for a client address: an unspecified
/// address (listen on all) is reached on loopback.
fn reachable_host(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
        Ok(ip) if ip.is_unspecified() => "::1".into(),
        _ => address.to_string(),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the supervisor shares with the handle.
#[derive(Default)]
struct Status {
    pid: AtomicU32,
    restarts: AtomicU64,
}

/// Everything needed to (re)start the process.
struct Launcher {
    installation: Installation,
    config: ManagedZooKeeperConfig,
    data_dir: PathBuf,
    status: Arc<Status>,
}

impl Launcher {
    fn spawn(&self) -> Result<Child> {
        let log_path = self.data_dir.join(LOG_FILE);
        rotate_log(&log_path);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = java_command(&self.installation, &self.config, &self.data_dir);
        {
            use std::io::Write;
            let _ = writeln!(
                log,
                "---- {} zkfire starts ZooKeeper: {:?}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                cmd.as_std()
            );
        }
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.installation.java.display()))?;
        let pid = child.id().unwrap_or(0);
        self.status.pid.store(pid, Ordering::SeqCst);
        let _ = std::fs::write(self.data_dir.join(PID_FILE), format!("{pid}\n"));
        Ok(child)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir.join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after STOP_TIMEOUT; returns once it is gone.
    async fn terminate(&self, child: &mut Child) {
        if let Some(pid) = child.id() {
            if let Err(e) = send_sigterm(pid).await {
                tracing::warn!(pid, "cannot send SIGTERM to ZooKeeper: {e:#}");
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    pid,
                    "ZooKeeper did not stop within {STOP_TIMEOUT:?}; killing it"
                );
            }
        }
        let _ = child.kill().await;
        self.status.pid.store(0, Ordering::SeqCst);
        let _ = std::fs::remove_file(self.data_dir.join(PID_FILE));
    }
}

fn rotate_log(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
}

/// SIGTERM through the `kill` utility: zkfire has no libc binding, and
/// tokio only sends SIGKILL. The pid is still our un-reaped child, so it
/// cannot name another process.
async fn send_sigterm(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match tokio::time::timeout(Duration::from_secs(5), status).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => bail!("kill -TERM {pid}: {s}"),
        Ok(Err(e)) => bail!("kill -TERM {pid}: {e}"),
        Err(_) => bail!("kill -TERM {pid} hung"),
    }
}

/// A ZooKeeper peer left running by an earlier zkfire that died without
/// stopping it holds our ports. Stop it when it is clearly ours (its command
/// line names our zoo.cfg) and orphaned (its parent is init); refuse to
/// start when it belongs to a living process.
async fn stop_stale_peer(data_dir: &Path) -> Result<()> {
    let pid_file = data_dir.join(PID_FILE);
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    let cfg = data_dir.join(CFG_FILE);
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&MAIN_CLASS.as_bytes())
                && args.contains(&cfg.as_os_str().as_encoded_bytes())
        })
        .unwrap_or(false);
    if !ours {
        let _ = std::fs::remove_file(&pid_file);
        return Ok(());
    }
    let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // "pid (comm) state ppid ...": comm may hold spaces and ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
    if parent != Some(1) {
        bail!(
            "a ZooKeeper of this data_dir ({}) already runs as pid {pid}, child of pid {}: \
             is another zkfire using it?",
            data_dir.display(),
            parent.map_or("?".into(), |p| p.to_string())
        );
    }
    tracing::warn!(
        pid,
        "stopping a ZooKeeper peer left running by an earlier zkfire"
    );
    send_sigterm(pid).await?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            bail!("the earlier ZooKeeper (pid {pid}) did not stop within {STOP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// A running, supervised ZooKeeper peer. Dropping it stops the peer in the
/// background; [`stop`](Self::stop) waits for that.
pub struct ManagedZooKeeper {
    host: String,
    port: u16,
    data_dir: PathBuf,
    status: Arc<Status>,
    stop: CancellationToken,
    supervisor: Option<JoinHandle<()>>,
}

impl ManagedZooKeeper {
    /// Writes zoo.cfg and myid into `data_dir`, starts the peer and returns
    /// once it answers `ruok` (bounded). It is stopped when `shutdown` is
    /// cancelled, or by [`stop`](Self::stop).
    pub async fn start(
        config: &ManagedZooKeeperConfig,
        shutdown: CancellationToken,
    ) -> Result<ManagedZooKeeper> {
        let installation = find_installation(config)?;
        if !installation.logs {
            tracing::warn!(
                "no slf4j binding found ({DEBIAN_SLF4J_BINDING}): ZooKeeper will log nothing"
            );
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        // ZooKeeper runs with the data dir as its working directory: give it
        // the absolute path, whatever ours is.
        let data_dir = std::fs::canonicalize(&config.data_dir)
            .with_context(|| format!("resolving {}", config.data_dir.display()))?;
        let cfg_text = zoo_cfg_text(config, &data_dir)?;
        stop_stale_peer(&data_dir).await?;

        let host = reachable_host(&config.client_address);
        let port = config.client_port;
        if four_letter(&host, port, "ruok", PROBE_TIMEOUT)
            .await
            .is_ok()
        {
            bail!(
                "something already answers ZooKeeper's ruok on {}: another ZooKeeper \
                 holds client_port {port}",
                host_port(&host, port)
            );
        }
        let cfg_path = data_dir.join(CFG_FILE);
        std::fs::write(&cfg_path, cfg_text)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        std::fs::write(data_dir.join("myid"), format!("{}\n", config.myid))
            .with_context(|| format!("writing {}", data_dir.join("myid").display()))?;

        let status = Arc::new(Status::default());
        let launcher = Launcher {
            installation,
            config: config.clone(),
            data_dir: data_dir.clone(),
            status: status.clone(),
        };
        let mut child = launcher.spawn()?;
        tracing::info!(
            pid = child.id().unwrap_or(0),
            address = %host_port(&host, port),
            data_dir = %data_dir.display(),
            "starting the managed ZooKeeper peer"
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(exit)) = child.try_wait() {
                bail!(
                    "ZooKeeper exited at start ({exit}); {}:\n{}",
                    data_dir.join(LOG_FILE).display(),
                    launcher.log_tail()
                );
            }
            let probe = four_letter(&host, port, "ruok", PROBE_TIMEOUT).await;
            if probe.is_ok_and(|a| a == "imok") {
                break;
            }
            if shutdown.is_cancelled() || Instant::now() > deadline {
                launcher.terminate(&mut child).await;
                if shutdown.is_cancelled() {
                    bail!("shut down while ZooKeeper was starting");
                }
                bail!(
                    "ZooKeeper did not answer ruok on {} within {START_TIMEOUT:?}; {}:\n{}",
                    host_port(&host, port),
                    data_dir.join(LOG_FILE).display(),
                    launcher.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::info!(
            "the managed ZooKeeper peer answers on {}",
            host_port(&host, port)
        );

        let stop = shutdown.child_token();
        let supervisor = tokio::spawn(supervise(child, launcher, stop.clone()));
        Ok(ManagedZooKeeper {
            host,
            port,
            data_dir,
            status,
            stop,
            supervisor: Some(supervisor),
        })
    }

    /// `client_address:client_port`, for `[zookeeper] connect` (loopback
    /// when the peer listens on every address).
    pub fn connect_string(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The absolute data dir (zoo.cfg, myid, zookeeper.log, snapshots).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The java process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        match self.status.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How often the supervisor has restarted the process.
    pub fn restarts(&self) -> u64 {
        self.status.restarts.load(Ordering::SeqCst)
    }

    /// The peer's `Mode:` (`leader`, `follower`, `standalone`, `observer`);
    /// `None` while it does not serve (no quorum yet) or does not answer.
    pub async fn mode(&self) -> Option<String> {
        let answer = four_letter(&self.host, self.port, "srvr", PROBE_TIMEOUT)
            .await
            .ok()?;
        mode_of(&answer).map(str::to_string)
    }

    /// Waits until the peer serves clients: at once when standalone, once
    /// a quorum of the ensemble runs otherwise.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.mode().await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the managed ZooKeeper on {} did not serve within {timeout:?} \
                     (an ensemble member needs a majority of its servers running)",
                    self.connect_string()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the peer (SIGTERM, SIGKILL after a timeout) and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.supervisor.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ManagedZooKeeper {
    fn drop(&mut self) {
        // The supervisor stops the process; should the runtime end first,
        // kill_on_drop takes it down.
        self.stop.cancel();
    }
}

/// Waits on the process; restarts it with backoff when it exits on its own,
/// stops it when `stop` is cancelled.
async fn supervise(mut child: Child, launcher: Launcher, stop: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    let mut started = Instant::now();
    loop {
        let exit = tokio::select! {
            exit = child.wait() => exit,
            () = stop.cancelled() => {
                launcher.terminate(&mut child).await;
                tracing::info!("the managed ZooKeeper peer stopped");
                return;
            }
        };
        launcher.status.pid.store(0, Ordering::SeqCst);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = MIN_BACKOFF;
        }
        let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
        tracing::warn!(
            %exit,
            log = %launcher.data_dir.join(LOG_FILE).display(),
            "the managed ZooKeeper peer exited; restarting it in {backoff:?}"
        );
        child = loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match launcher.spawn() {
                Ok(child) => break child,
                Err(e) => tracing::error!(
                    "cannot restart the managed ZooKeeper peer: {e:#}; next try in {backoff:?}"
                ),
            }
        };
        started = Instant::now();
        let restarts = launcher.status.restarts.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(
            pid = child.id().unwrap_or(0),
            restarts,
            "restarted the managed ZooKeeper peer"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ManagedZooKeeperConfig {
        ManagedZooKeeperConfig {
            client_port: 2191,
            ..Default::default()
        }
    }

    #[test]
    fn standalone_cfg() {
        let text = zoo_cfg_text(&config(), Path::new("/srv/zk")).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "tickTime=2000",
                "initLimit=10",
                "syncLimit=5",
                "dataDir=/srv/zk",
                "clientPort=2191",
                "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                "admin.enableServer=false",
            ]
        );
    }

    #[test]
    fn ensemble_cfg_sorts_servers_and_appends_extra() {
        let mut c = config();
        c.myid = 2;
        for (id, addr) in [
            ("10", "10.0.0.10:2888:3888"),
            ("2", "10.0.0.2:2888:3888"),
            ("1", "10.0.0.1:2888:3888"),
        ] {
            c.servers.insert(id.into(), addr.into());
        }
        c.extra.insert("autopurge.purgeInterval".into(), "1".into());
        c.extra
            .insert("4lw.commands.whitelist".into(), "mntr, conf".into());
        c.extra.insert("admin.enableServer".into(), "true".into());
        let text = zoo_cfg_text(&c, Path::new("C:\\zk")).unwrap();
        let servers: Vec<&str> = text.lines().filter(|l| l.starts_with("server.")).collect();
        assert_eq!(
            servers,
            [
                "server.1=10.0.0.1:2888:3888",
                "server.2=10.0.0.2:2888:3888",
                "server.10=10.0.0.10:2888:3888",
            ]
        );
        assert!(text.contains("\nautopurge.purgeInterval=1\n"), "{text}");
        assert!(text.contains("\n4lw.commands.whitelist=mntr,conf,ruok,srvr\n"));
        assert!(text.contains("\nadmin.enableServer=true\n"));
        assert_eq!(text.matches("admin.enableServer").count(), 1);
        // Properties syntax: a backslash is escaped.
        assert!(text.contains("\ndataDir=C:\\\\zk\n"), "{text}");
    }

    #[test]
    fn whitelist_star_stays() {
        assert_eq!(with_required_4lw("*"), "*");
        assert_eq!(with_required_4lw("ruok"), "ruok,srvr");
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        type Change = Box<dyn Fn(&mut ManagedZooKeeperConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.client_port = 0), "client_port"),
            (Box::new(|c| c.tick_time = 0), "tick_time"),
            (
                Box::new(|c| c.client_address = "127.0.0.1\nx=y".into()),
                "client_address",
            ),
            (Box::new(|c| c.heap = "lots".into()), "heap"),
            (
                Box::new(|c| {
                    c.servers.insert("1".into(), "h:1:2".into());
                    c.servers.insert("2".into(), "h:3:4".into());
                    c.myid = 3;
                }),
                "myid 3 is not among the servers (1, 2)",
            ),
            (
                Box::new(|c| {
                    c.servers.insert("x".into(), "h:1:2".into());
                }),
                "'x'",
            ),
            (
                Box::new(|c| {
                    c.servers.insert("1".into(), "h:1".into());
                }),
                "host:peerPort:electionPort",
            ),
            (
                Box::new(|c| {
                    c.extra.insert("clientPort".into(), "1".into());
                }),
                "client_port",
            ),
            (
                Box::new(|c| {
                    c.extra.insert("server.4".into(), "h:1:2".into());
                }),
                "[zookeeper.managed.servers]",
            ),
            (
                Box::new(|c| {
                    c.extra.insert("a b".into(), "1".into());
                }),
                "'a b'",
            ),
            (
                Box::new(|c| {
                    c.extra
                        .insert("maxClientCnxns".into(), "1\nclientPort=1".into());
                }),
                "line breaks",
            ),
        ];
        for (change, expected) in cases {
            let mut c = config();
            change(&mut c);
            let err = zoo_cfg_text(&c, Path::new("/d")).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should name {expected}");
        }
    }

    #[test]
    fn heap_sizes() {
        for ok in ["256m", "2g", "1048576", "512K"] {
            assert!(is_heap_size(ok), "{ok}");
        }
        for bad in ["", "m", "256mb", "-1m", "2 g"] {
            assert!(!is_heap_size(bad), "{bad}");
        }
    }

    #[test]
    fn connect_string_for_unspecified_addresses() {
        assert_eq!(
            host_port(&reachable_host("0.0.0.0"), 2181),
            "127.0.0.1:2181"
        );
        assert_eq!(host_port(&reachable_host("::"), 2181), "[::1]:2181");
        assert_eq!(
            host_port(&reachable_host("10.0.0.1"), 2181),
            "10.0.0.1:2181"
        );
        assert_eq!(host_port(&reachable_host("zk.example"), 1), "zk.example:1");
    }

    #[test]
    fn srvr_mode() {
        let answer = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.0/0\nMode: follower\nNode count: 5\n";
        assert_eq!(mode_of(answer), Some("follower"));
        assert_eq!(
            mode_of("This ZooKeeper instance is not currently serving requests\n"),
            None
        );
    }

    #[test]
    fn debian_installation() {
        let dir = tempfile::tempdir().unwrap();
        let debian = DebianPaths {
            zookeeper_jar: dir.path().join("zookeeper.jar"),
            slf4j_binding: dir.path().join("slf4j-simple.jar"),
            conf_dir: dir.path().join("conf"),
        };
        let err = debian_classpath(&debian).unwrap_err().to_string();
        assert!(err.contains("zookeeper.jar is missing"), "{err}");
        assert!(err.contains("Debian package `zookeeper`"), "{err}");
        std::fs::write(&debian.zookeeper_jar, "").unwrap();
        assert_eq!(
            debian_classpath(&debian).unwrap(),
            (vec![debian.zookeeper_jar.clone()], false)
        );
        std::fs::write(&debian.slf4j_binding, "").unwrap();
        std::fs::create_dir(&debian.conf_dir).unwrap();
        assert_eq!(
            debian_classpath(&debian).unwrap(),
            (
                vec![
                    debian.conf_dir.clone(),
                    debian.zookeeper_jar.clone(),
                    debian.slf4j_binding.clone()
                ],
                true
            )
        );
    }

    #[test]
    fn release_folder_installation() {
        let home = tempfile::tempdir().unwrap();
        let err = home_classpath(home.path()).unwrap_err().to_string();
        assert!(err.contains("no zookeeper*.jar"), "{err}");
        let lib = home.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::create_dir(home.path().join("conf")).unwrap();
        for jar in [
            "zookeeper-jute-3.8.4.jar",
            "logback-classic-1.2.13.jar",
            "zookeeper-3.8.4.jar",
            "README.txt",
        ] {
            std::fs::write(lib.join(jar), "").unwrap();
        }
        let (classpath, logs) = home_classpath(home.path()).unwrap();
        assert!(logs);
        assert_eq!(
            classpath,
            [
                home.path().join("conf"),
                lib.join("logback-classic-1.2.13.jar"),
                lib.join("zookeeper-3.8.4.jar"),
                lib.join("zookeeper-jute-3.8.4.jar"),
            ]
        );
        let missing = home.path().join("nope");
        assert!(home_classpath(&missing)
            .unwrap_err()
            .to_string()
            .contains("not a folder"));
    }

    #[test]
    fn java_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let err = find_java(None, &path).unwrap_err().to_string();
        assert!(err.contains("java is not on the PATH"), "{err}");
        std::fs::write(dir.path().join("java"), "").unwrap();
        assert_eq!(find_java(None, &path).unwrap(), dir.path().join("java"));
        let explicit = dir.path().join("jdk/bin/java");
        let err = find_java(Some(&explicit), &path).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn java_command_line() {
        let installation = Installation {
            java: PathBuf::from("/usr/bin/java"),
            classpath: vec![PathBuf::from("/a.jar"), PathBuf::from("/b.jar")],
            logs: true,
        };
        let cmd = java_command(&installation, &config(), Path::new("/srv/zk"));
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "-Xmx256m");
        assert!(args.contains(&"-Dzookeeper.log.dir=/srv/zk".to_string()));
        let cp = args.iter().position(|a| a == "-cp").unwrap();
        assert_eq!(args[cp + 1], "/a.jar:/b.jar");
        assert_eq!(args[cp + 2], MAIN_CLASS);
        assert_eq!(args[cp + 3], "/srv/zk/zoo.cfg");
    }
}
