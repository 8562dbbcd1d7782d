//! A private PostgreSQL server for tests, from the Debian binaries under
//! `/usr/lib/postgresql/VERSION/bin`: its own cluster in a temporary folder,
//! listening on 127.0.0.1 only, on a free port, with its socket in that
//! folder. Nothing depends on (or touches) a PostgreSQL already running.
//!
//! The instance is stopped and its folder removed when dropped. A test
//! process killed outright (SIGKILL) leaves the server running; its folder
//! starts with `zkfire-pg-` in the temporary directory.

use crate::ports::free_port;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tempfile::TempDir;

/// Where Debian installs each major version's server binaries.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";
/// OS account the server runs as when the tests run as root.
const OS_USER: &str = "postgres";
/// Database superuser created by initdb; no password (trust auth).
const SUPERUSER: &str = "postgres";
/// Database created by [`PostgresInstance::start`], behind [`PostgresInstance::url`].
const DEFAULT_DATABASE: &str = "zkfire";
/// Ports picked by `free_port` can be taken by someone else before the server
/// binds them; then we try another.
const START_ATTEMPTS: usize = 5;

/// Settings appended to the cluster's postgresql.conf. Durability is off (a
/// test cluster is thrown away) for speed; connections are raised because
/// parallel tests each open a pool.
const SETTINGS: &str = "\
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
";

pub struct PostgresInstance {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    /// Server-side tools run through `runuser -u postgres`: we are root,
    /// which initdb and postgres refuse.
    as_os_user: bool,
    /// Whether the server process is up; [`stop`](Self::stop) and
    /// [`start_stopped`](Self::start_stopped) change it through a shared `Arc`.
    running: AtomicBool,
}

impl PostgresInstance {
    /// Creates a cluster, starts it and creates the database behind
    /// [`url`](Self::url). Takes about a second.
    pub fn start() -> Result<PostgresInstance> {
        let bin = find_bin_dir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_os_user = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("zkfire-pg-")
            .tempdir()
            .context("creating a temporary folder for PostgreSQL")?;
        if as_os_user {
            run(
                Command::new("chown")
                    .arg(format!("{OS_USER}:"))
                    .arg(dir.path()),
                "chown of the temporary folder to the postgres user",
            )?;
        }
        let mut pg = PostgresInstance {
            bin,
            dir,
            port: 0,
            as_os_user,
            running: AtomicBool::new(false),
        };
        pg.init_cluster()?;
        pg.start_server()?;
        pg.create_database(DEFAULT_DATABASE)?;
        Ok(pg)
    }

    /// One instance shared by every caller that holds the returned `Arc`;
    /// started on first use, stopped when the last holder drops it (a later
    /// call then starts a new one). Tests running in parallel in one process
    /// thus share a server, each with its own database
    /// ([`fresh_database`](Self::fresh_database)).
    pub fn shared() -> Result<Arc<PostgresInstance>> {
        static SHARED: Mutex<Weak<PostgresInstance>> = Mutex::new(Weak::new());
        // Held while starting, so concurrent first callers start only one.
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pg) = slot.upgrade() {
            return Ok(pg);
        }
        let pg = Arc::new(PostgresInstance::start()?);
        *slot = Arc::downgrade(&pg);
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's temporary folder (the server log is `server.log`).
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// URL of the database created at start.
    pub fn url(&self) -> String {
        self.database_url(DEFAULT_DATABASE)
    }

    /// Creates an empty database and returns its URL. `name` is limited to
    /// ASCII letters, digits and `_` (no quoting surprises).
    pub fn create_database(&self, name: &str) -> Result<String> {
        let valid = !name.is_empty()
            && name.len() < 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            bail!("invalid database name {name:?}: use ASCII letters, digits and _");
        }
        // A client: runs as whoever we are, over TCP.
        run(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", SUPERUSER, "--maintenance-db", "postgres", name])
                .current_dir(self.dir.path()),
            &format!("createdb {name}"),
        )?;
        Ok(self.database_url(name))
    }

    /// Creates a database with a name not used before in this process.
    pub fn fresh_database(&self) -> Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.create_database(&format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server-side tool of this installation, as the postgres OS user when
    /// we are root, run from our folder (the postgres user may not be allowed
    /// into the caller's working directory).
    fn server_tool(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_os_user {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn init_cluster(&self) -> Result<()> {
        run(
            self.server_tool("initdb")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-A", "trust", "-U", SUPERUSER])
                // UTF-8 whatever the environment's locale; C collation.
                .args(["-E", "UTF8", "--no-locale", "--no-sync"]),
            "initdb",
        )?;
        // The socket goes into our folder: the Debian default
        // (/var/run/postgresql) may not exist or be someone else's.
        let socket_dir = self.dir.path().to_string_lossy().replace('\'', "''");
        let settings = format!("{SETTINGS}unix_socket_directories = '{socket_dir}'\n");
        let conf = self.data_dir().join("postgresql.conf");
        append(&conf, &settings).with_context(|| format!("writing {}", conf.display()))
    }

    fn start_server(&mut self) -> Result<()> {
        let log = self.dir.path().join("server.log");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let started = run(
                self.server_tool("pg_ctl")
                    .arg("-D")
                    .arg(self.data_dir())
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", "60", "-o", &format!("-p {port}"), "start"]),
                "pg_ctl start",
            );
            match started {
                Ok(_) => {
                    self.port = port;
                    self.running.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) => {
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    let in_use = log_text.contains("Address already in use");
                    last_error = Some(e.context(format!("server log:\n{log_text}")));
                    if !in_use {
                        break;
                    }
                }
            }
        }
        match last_error {
            Some(e) => Err(e),
            None => bail!("PostgreSQL did not start"),
        }
    }
}

/// Stopping and starting a running instance, keeping its data and port:
/// for tests of what clients of the database do while it is away. Take an
/// instance of your own ([`PostgresInstance::start`]) for these, not the
/// [`shared`](PostgresInstance::shared) one other tests are using.
impl PostgresInstance {
    /// Whether the server is up (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Stops the server ("fast" mode: open connections are ended, the
    /// data is kept, as an administrator's restart does). Does nothing when
    /// it is already stopped.
    pub fn stop(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        run(
            self.server_tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        )?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Starts a server [`stop`](Self::stop)ped before, on the same port with
    /// the same data; returns once it accepts connections. Does nothing
    /// when it is running.
    pub fn start_stopped(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = self.dir.path().join("server.log");
        run(
            self.server_tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args([
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!("-p {}", self.port),
                    "start",
                ]),
            "pg_ctl start (again)",
        )
        .map_err(|e| {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            e.context(format!("server log:\n{log_text}"))
        })?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// [`stop`](Self::stop), wait `pause`, then
    /// [`start_stopped`](Self::start_stopped).
    pub fn restart(&self, pause: std::time::Duration) -> Result<()> {
        self.stop()?;
        std::thread::sleep(pause);
        self.start_stopped()
    }
}

impl Drop for PostgresInstance {
    fn drop(&mut self) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        // Immediate: the data is thrown away anyway. The folder itself is
        // removed afterwards by TempDir's own drop.
        let stopped = run(
            self.server_tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
        if let Err(e) = stopped {
            eprintln!("zkfire-testkit: could not stop PostgreSQL: {e:#}");
        }
    }
}

fn find_bin_dir() -> Result<PathBuf> {
    find_bin_dir_in(Path::new(INSTALL_ROOT))
}

/// The `bin` folder of the highest major version under `root` that has both
/// initdb and pg_ctl.
fn find_bin_dir_in(root: &Path) -> Result<PathBuf> {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
                continue;
            }
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    match best {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL server binaries not found ({}/*/bin/initdb): \
             install the Debian package `postgresql` (apt-get install -y postgresql)",
            root.display()
        ),
    }
}

/// "15" → [15], "9.6" → [9, 6]; None for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Runs a command to completion; an error carries its output.
fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} ({:?})", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{find_bin_dir_in, parse_version};
    use std::fs;

    #[test]
    fn picks_highest_complete_version() {
        let root = tempfile::tempdir().unwrap();
        let err = find_bin_dir_in(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("install the Debian package `postgresql`"),
            "{err}"
        );
        for (version, complete) in [("9.6", true), ("13", true), ("15", true), ("16", false)] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("initdb"), "").unwrap();
            if complete {
                fs::write(bin.join("pg_ctl"), "").unwrap();
            }
        }
        fs::create_dir_all(root.path().join("common/bin")).unwrap();
        assert_eq!(
            find_bin_dir_in(root.path()).unwrap(),
            root.path().join("15").join("bin")
        );
    }

    #[test]
    fn stop_and_start_keep_port_and_data() {
        use super::PostgresInstance;
        use std::net::TcpStream;
        let pg = PostgresInstance::start().unwrap_or_else(|e| panic!("{e:#}"));
        let port = pg.port();
        pg.create_database("kept")
            .unwrap_or_else(|e| panic!("{e:#}"));
        pg.stop().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!pg.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "still listening"
        );
        pg.stop().unwrap_or_else(|e| panic!("{e:#}"));
        pg.start_stopped().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(pg.is_running());
        assert_eq!(pg.port(), port);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        // The database made before the stop is still there.
        assert!(pg.create_database("kept").is_err(), "data lost");
        pg.restart(std::time::Duration::from_millis(100))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(pg.create_database("kept").is_err(), "data lost");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("common"), None);
        assert!(parse_version("16") > parse_version("9.6"));
    }
}
