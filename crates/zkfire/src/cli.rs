//! The command line: `serve`, `check-config` and account management.

use crate::accounts::{self, AccountError};
use crate::config::Config;
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "zkfire", version, about = "A clustered XMPP server")]
pub struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults are used.
    #[arg(long, short, global = true, env = "ZKFIRE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve,
    /// Read the configuration, report what is wrong, and exit.
    CheckConfig,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Convert the older Java project's cluster.xml into zkfire's TOML.
    ImportClusterXml {
        /// The cluster.xml to read.
        file: PathBuf,
        /// Write the TOML here (never overwrites); default: standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The members, their bus addresses, uptime and session counts; exits
    /// non-zero when ZooKeeper cannot be reached.
    Status,
    /// Prints the `user:password` the nodes authenticate to ZooKeeper with
    /// (`[zookeeper] digest`, or derived from the cluster secret), for
    /// `addauth digest` in zkCli.
    ZookeeperCredentials,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// JID of the account (`name@domain`, or `name` for the served domain).
        jid: String,
        /// The password; asked for when not given.
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account and everything stored for it.
    Delete { jid: String },
    /// Set a new password.
    Passwd {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// List all accounts.
    List,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::ImportClusterXml { file, output } = &cli.command {
        return import_cluster_xml(file, output.as_deref());
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CheckConfig => {
            crate::tls::TlsContext::from_config_check(&config)?;
            for w in config.cluster_warnings() {
                eprintln!("warning: {w}");
            }
            println!(
                "configuration is valid: domain {}, storage {}",
                config.server.domain,
                redact(&config.storage_url())
            );
            Ok(())
        }
        Command::Serve => {
            crate::logging::init(&config.server.log_level);
            runtime()?.block_on(crate::serve::run(config))
        }
        Command::User(cmd) => runtime()?.block_on(user(config, cmd)),
        Command::Cluster(ClusterCommand::Status) => {
            runtime()?.block_on(crate::cluster::status::print(&config))
        }
        Command::Cluster(ClusterCommand::ZookeeperCredentials) => {
            println!("{}", crate::cluster::zk_acl::digest(&config)?);
            Ok(())
        }
        Command::ImportClusterXml { .. } => Ok(()),
    }
}

fn import_cluster_xml(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let xml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let converted =
        crate::cluster_xml::convert(&xml).with_context(|| file.display().to_string())?;
    match output {
        Some(path) => {
            use std::io::Write;
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?
                .write_all(converted.toml.as_bytes())?;
        }
        None => print!("{}", converted.toml),
    }
    for n in &converted.unmapped {
        eprintln!("not converted: {n}");
    }
    for w in &converted.warnings {
        eprintln!("check: {w}");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let domain = config.server.domain.clone();
    if config.storage.url.is_none() {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("creating {}", config.server.data_dir.display()))?;
    }
    let storage = zkfire_storage::open(&config.storage_url())
        .await
        .context("opening storage")?;
    let result = match cmd {
        UserCommand::Add { jid, password } => {
            let node = accounts::account_name(&jid, &domain)?;
            let password = password_from(password, true)?;
            accounts::create(storage.as_ref(), &node, &password)
                .await
                .map(|()| println!("created {node}@{domain}"))
        }
        UserCommand::Delete { jid } => {
            let node = accounts::account_name(&jid, &domain)?;
            accounts::delete(storage.as_ref(), &node)
                .await
                .map(|()| println!("deleted {node}@{domain}"))
        }
        UserCommand::Passwd { jid, password } => {
            let node = accounts::account_name(&jid, &domain)?;
            let password = password_from(password, true)?;
            accounts::set_password(storage.as_ref(), &node, &password)
                .await
                .map(|()| println!("password of {node}@{domain} changed"))
        }
        UserCommand::List => match storage.list_accounts().await {
            Ok(list) => {
                for node in list {
                    println!("{node}@{domain}");
                }
                Ok(())
            }
            Err(e) => Err(AccountError::from(e)),
        },
    };
    storage.close().await;
    result.map_err(Into::into)
}

/// The password given on the command line, or asked for: twice on a
/// terminal, or one line from standard input otherwise.
fn password_from(given: Option<String>, confirm: bool) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Again: ")? != p {
            bail!("the passwords differ");
        }
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Hides a password in a URL for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
