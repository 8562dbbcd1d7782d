//! Command line: one subcommand per scenario, plus the relay.

use crate::accounts::Accounts;
use crate::net::{is_loopback, resolve_targets};
use crate::relay::RelayOptions;
use crate::run::{RunConfig, Scenario};
use crate::session::Timeouts;
use crate::shards::default_shards;
use crate::tls::{client_config, self_signed_server, Trust};
use crate::xmpp::LoginOptions;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest run accepted (duration, hold, or relay lifetime).
const MAX_SECS: f64 = 24.0 * 3600.0;

#[derive(Parser, Debug)]
#[command(
    name = "zkfire-bench",
    version,
    about = "XMPP load generator (loopback only unless --allow-remote)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// N sessions log in, send initial presence and stay connected for --hold-secs.
    Idle(IdleArgs),
    /// Pairs exchange one-to-one messages at an open-loop target rate.
    Chat(ChatArgs),
    /// Accounts with K roster contacts change presence at an open-loop target rate.
    Presence(PresenceArgs),
    /// Chat with the two accounts of each pair on different --address entries.
    Cluster(ChatArgs),
    /// A minimal fake XMPP server that relays between its clients, to find
    /// where the generator itself stops.
    Relay(RelayArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS (RFC 6120 section 5), required.
    Starttls,
    /// No TLS (the server must allow it).
    None,
}

#[derive(Args, Debug, Serialize)]
pub struct Common {
    /// Server address HOST:PORT; repeat or separate by commas. Account i
    /// uses address i mod count.
    #[arg(
        short = 'a',
        long = "address",
        default_value = "127.0.0.1:5222",
        value_delimiter = ','
    )]
    pub address: Vec<String>,
    /// Allow addresses outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Number of accounts: <prefix>0 .. <prefix>N-1.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub users: usize,
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// The password of every account.
    #[arg(long, default_value = "bench", env = "ZKFIRE_BENCH_PASSWORD")]
    #[serde(skip)]
    pub password: String,
    #[arg(long, default_value = "bench")]
    pub resource: String,
    /// Create the accounts by in-band registration (XEP-0077) first; an
    /// existing account is fine, a refusal is counted and the login goes on.
    #[arg(long)]
    pub register: bool,
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: TlsMode,
    /// Do not check the server's certificate (loopback only).
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA or self-signed certificate(s) in this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Name to check the certificate against [default: --domain].
    #[arg(long)]
    pub tls_name: Option<String>,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 64)]
    pub login_concurrency: usize,
    /// Logins started per second (0: as fast as --login-concurrency allows).
    #[arg(long, default_value_t = 0)]
    pub login_rate: u64,
    /// Seconds one login may take, connect to bound resource.
    #[arg(long, default_value_t = 30.0)]
    pub login_timeout: f64,
    /// Seconds for all logins (after pacing) before the run goes on without the rest.
    #[arg(long, default_value_t = 120.0)]
    pub ramp_timeout: f64,
    /// Spread connections over this many loopback source addresses
    /// (127.0.1.1, 127.0.1.2, ...) against per-address connection limits.
    #[arg(long, default_value_t = 0)]
    pub spread_local: usize,
    /// Seconds a write may block before the session counts as stuck.
    #[arg(long, default_value_t = 10.0)]
    pub write_timeout: f64,
    /// Write all figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the traffic of this account's session on stderr (after login).
    #[arg(long)]
    pub trace_account: Option<usize>,
    /// Single-threaded runtimes to spread the sessions over [default: one
    /// per core]; 0 runs them all on one multi-threaded runtime.
    #[arg(long, default_value_t = default_shards())]
    pub shards: usize,
}

#[derive(Args, Debug, Serialize)]
pub struct Traffic {
    /// Seconds of the timetable.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Target rate, stanzas per second (open loop).
    #[arg(short = 'r', long, default_value_t = 1000)]
    pub rate: u64,
    /// Most stanzas in the timetable, whatever the duration.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_messages: u64,
    /// Length of the measured text (body or status), at least the marker.
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Seconds to wait for late deliveries after the timetable ends.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
}

#[derive(Args, Debug, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to hold the sessions once all are up.
    #[arg(long, default_value_t = 10.0)]
    pub hold_secs: f64,
}

#[derive(Args, Debug, Serialize)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: Traffic,
}

#[derive(Args, Debug, Serialize)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Roster contacts per account (even, below --users).
    #[arg(short = 'k', long, default_value_t = 10)]
    pub contacts: usize,
    /// Seconds for every roster to be complete.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// Take the rosters as already made (no roster get, no subscriptions).
    #[arg(long)]
    pub skip_roster_setup: bool,
}

#[derive(Args, Debug, Serialize)]
pub struct RelayArgs {
    /// Where to listen; port 0 picks a free one (printed on stdout). Repeat
    /// or separate by commas to serve the same clients on several addresses.
    #[arg(long, default_value = "127.0.0.1:5299", value_delimiter = ',')]
    pub listen: Vec<String>,
    #[arg(long)]
    pub allow_remote: bool,
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// The password every account has.
    #[arg(long, default_value = "bench")]
    pub password: String,
    /// PLAIN accepts any password.
    #[arg(long)]
    pub any_password: bool,
    /// Offer STARTTLS with a generated self-signed certificate.
    #[arg(long)]
    pub tls: bool,
    /// SCRAM iteration count.
    #[arg(long, default_value_t = 4096)]
    pub iterations: u32,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub max_secs: f64,
    /// Single-threaded runtimes to spread the connections over; 0 (the
    /// default) runs them all on one multi-threaded runtime, which measured
    /// better here: a relayed stanza crosses from one session to another.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
}

/// Seconds from the command line as a duration, within bounds.
pub fn secs(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || !(0.0..=MAX_SECS).contains(&value) {
        bail!("--{name} must be between 0 and {MAX_SECS} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

impl Cli {
    /// The scenario and its resolved configuration, or the relay's options.
    pub async fn resolve(self) -> anyhow::Result<Resolved> {
        match self.command {
            Command::Idle(a) => {
                let parameters = serde_json::to_value(&a)?;
                let hold = secs("hold-secs", a.hold_secs)?;
                let mut cfg = run_config(Scenario::Idle, &a.common, None, parameters).await?;
                cfg.hold = hold;
                Ok(Resolved::Run(Box::new(cfg)))
            }
            Command::Chat(a) | Command::Cluster(a) if a.common.users < 2 => {
                bail!("chat needs --users of at least 2")
            }
            Command::Chat(a) => {
                let parameters = serde_json::to_value(&a)?;
                let cfg =
                    run_config(Scenario::Chat, &a.common, Some(&a.traffic), parameters).await?;
                Ok(Resolved::Run(Box::new(cfg)))
            }
            Command::Cluster(a) => {
                let parameters = serde_json::to_value(&a)?;
                let cfg =
                    run_config(Scenario::Cluster, &a.common, Some(&a.traffic), parameters).await?;
                Ok(Resolved::Run(Box::new(cfg)))
            }
            Command::Presence(a) => {
                let parameters = serde_json::to_value(&a)?;
                let mut cfg =
                    run_config(Scenario::Presence, &a.common, Some(&a.traffic), parameters).await?;
                cfg.contacts = a.contacts;
                cfg.setup_timeout = secs("setup-timeout", a.setup_timeout)?;
                cfg.skip_roster_setup = a.skip_roster_setup;
                Ok(Resolved::Run(Box::new(cfg)))
            }
            Command::Relay(a) => {
                let listen = resolve_targets(&a.listen, a.allow_remote).await?;
                let tls = if a.tls {
                    Some(self_signed_server(&a.domain)?)
                } else {
                    None
                };
                Ok(Resolved::Relay(RelayOptions {
                    listen,
                    domain: a.domain,
                    password: a.password,
                    any_password: a.any_password,
                    tls,
                    iterations: a.iterations.max(1),
                    max_run: secs("max-secs", a.max_secs)?,
                    auth_timeout: Duration::from_secs(60),
                    shards: a.shards,
                }))
            }
        }
    }
}

pub enum Resolved {
    Run(Box<RunConfig>),
    Relay(RelayOptions),
}

async fn run_config(
    scenario: Scenario,
    c: &Common,
    traffic: Option<&Traffic>,
    parameters: serde_json::Value,
) -> anyhow::Result<RunConfig> {
    if c.users == 0 {
        bail!("--users must be at least 1");
    }
    let targets = resolve_targets(&c.address, c.allow_remote).await?;
    let tls = match c.tls {
        TlsMode::None => None,
        TlsMode::Starttls => {
            let trust = match (&c.ca_file, c.insecure) {
                (Some(_), true) => bail!("give either --ca-file or --insecure, not both"),
                (Some(path), false) => Trust::File(path.clone()),
                (None, true) => {
                    if targets.iter().any(|t| !is_loopback(t.ip())) {
                        bail!("--insecure is for loopback addresses only");
                    }
                    Trust::Insecure
                }
                (None, false) => bail!(
                    "STARTTLS needs --ca-file FILE (the server's CA or certificate) or, on loopback, --insecure; or use --tls none"
                ),
            };
            let name = c.tls_name.clone().unwrap_or_else(|| c.domain.clone());
            let name = rustls::pki_types::ServerName::try_from(name)
                .context("--tls-name is not a valid DNS name")?;
            Some((client_config(&trust)?, name))
        }
    };
    let (duration, rate, max_messages, body_size, grace) = match traffic {
        Some(t) => {
            if t.rate == 0 {
                bail!("--rate must be at least 1");
            }
            (
                secs("duration", t.duration)?,
                t.rate,
                t.max_messages,
                t.body_size,
                secs("grace", t.grace)?,
            )
        }
        None => (Duration::ZERO, 1, 0, 0, Duration::ZERO),
    };
    Ok(RunConfig {
        scenario,
        targets,
        accounts: Accounts {
            prefix: c.user_prefix.clone(),
            domain: c.domain.clone(),
            count: c.users,
        },
        login: LoginOptions {
            domain: c.domain.clone(),
            password: c.password.clone(),
            resource: c.resource.clone(),
            tls,
            register: c.register,
            send_initial_presence: true,
            timeout: secs("login-timeout", c.login_timeout)?,
        },
        login_concurrency: c.login_concurrency.max(1),
        login_rate: c.login_rate,
        ramp_timeout: secs("ramp-timeout", c.ramp_timeout)?,
        spread_local: c.spread_local,
        duration,
        rate,
        max_messages,
        grace,
        hold: Duration::ZERO,
        contacts: 0,
        setup_timeout: Duration::ZERO,
        skip_roster_setup: false,
        body_size,
        timeouts: Timeouts {
            write: secs("write-timeout", c.write_timeout)?,
            close: Duration::from_secs(3),
            trace: false,
        },
        trace_account: c.trace_account,
        shards: c.shards,
        quiet: c.quiet,
        parameters,
        json: c.json.clone(),
    })
}

impl RunConfig {
    /// The longest this run can take if every wait runs to its deadline;
    /// a watchdog ends the process past it.
    pub fn hard_limit(&self) -> Duration {
        let pacing = if self.login_rate > 0 {
            Duration::from_secs_f64(self.accounts.count as f64 / self.login_rate as f64)
        } else {
            Duration::ZERO
        };
        pacing
            + self.ramp_timeout
            + self.setup_timeout
            + self.hold
            + self.duration
            + self.grace * 2
            + self.timeouts.write * 2
            + self.timeouts.close
            + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_are_bounded() {
        assert!(secs("x", -1.0).is_err());
        assert!(secs("x", f64::NAN).is_err());
        assert!(secs("x", 1e12).is_err());
        assert_eq!(secs("x", 1.5).unwrap(), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn refuses_remote_and_insecure_remote() {
        let cli = Cli::parse_from(["zkfire-bench", "chat", "-a", "192.0.2.1:5222", "--insecure"]);
        assert!(cli.resolve().await.is_err());
        let cli = Cli::parse_from([
            "zkfire-bench",
            "chat",
            "-a",
            "192.0.2.1:5222",
            "--allow-remote",
            "--insecure",
        ]);
        let err = cli.resolve().await.err().unwrap().to_string();
        assert!(err.contains("loopback"), "{err}");
        let cli = Cli::parse_from(["zkfire-bench", "chat", "-a", "127.0.0.1:5222"]);
        let err = cli.resolve().await.err().unwrap().to_string();
        assert!(err.contains("--ca-file"), "{err}");
        let cli = Cli::parse_from(["zkfire-bench", "idle", "--tls", "none", "--hold-secs", "1"]);
        assert!(cli.resolve().await.is_ok());
    }

    #[test]
    fn password_is_not_in_the_parameters() {
        let cli = Cli::parse_from([
            "zkfire-bench",
            "chat",
            "--password",
            "secret",
            "--tls",
            "none",
        ]);
        let Command::Chat(a) = cli.command else {
            panic!()
        };
        let v = serde_json::to_value(&a).unwrap();
        assert!(!v.to_string().contains("secret"));
        assert_eq!(v["traffic"]["rate"], 1000);
    }
}
