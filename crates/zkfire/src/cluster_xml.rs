//! Imports the old Java project's `cluster.xml` into zkfire's TOML config
//! (`zkfire import-cluster-xml`).
//!
//! The old file (root `<jive>`) held `<notice>` (host:port of this node's
//! inter-node endpoint), `<zClient>` (ZooKeeper connect string) and `<zoo>`:
//! the ZooKeeper peer the node ran itself, one child per zoo.cfg key,
//! `<server name="server.N">host:peer:election</server>` per ensemble member
//! and `<myid>`, which was also the node's id. Without `<zClient>` the
//! connect string was derived from the servers and `clientPort`.
//!
//! The output is a starting point, not a complete config: cluster.xml never
//! held the cluster secret or the database, so the TOML says, in comments,
//! what the user must add. It parses with [`crate::config::Config::parse`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use zkfire_xml::Element;

/// Far above any real cluster.xml (a few hundred bytes).
const MAX_INPUT_BYTES: usize = 1 << 20;

/// zoo.cfg keys ZooKeeper's own config parser (QuorumPeerConfig, 3.8)
/// knows, besides the ones with a field of their own in
/// `[zookeeper.managed]`; these go to `[zookeeper.managed.extra]` as they are.
const KNOWN_ZOO_KEYS: &[&str] = &[
    "autopurge.purgeInterval",
    "autopurge.snapRetainCount",
    "clientPortListenBacklog",
    "connectToLearnerMasterLimit",
    "dataLogDir",
    "dynamicConfigFile",
    "electionAlg",
    "jvm.pause.info-threshold.ms",
    "jvm.pause.monitor",
    "jvm.pause.sleep.time.ms",
    "jvm.pause.warn-threshold.ms",
    "localSessionsEnabled",
    "localSessionsUpgradingEnabled",
    "maxClientCnxns",
    "maxSessionTimeout",
    "metricsProvider.className",
    "minSessionTimeout",
    "multiAddress.enabled",
    "multiAddress.reachabilityCheckEnabled",
    "multiAddress.reachabilityCheckTimeoutMs",
    "observerMasterPort",
    "oraclePath",
    "peerType",
    "portUnification",
    "quorum.auth.enableSasl",
    "quorum.auth.kerberos.servicePrincipal",
    "quorum.auth.learner.saslLoginContext",
    "quorum.auth.learnerRequireSasl",
    "quorum.auth.server.saslLoginContext",
    "quorum.auth.serverRequireSasl",
    "quorum.cnxn.threads.size",
    "quorumListenOnAllIPs",
    "reconfigEnabled",
    "secureClientPort",
    "secureClientPortAddress",
    "sslQuorum",
    "sslQuorumReloadCertFiles",
    "standaloneEnabled",
    "syncEnabled",
];
/// Key prefixes ZooKeeper's parser knows (`group.1`, `weight.2`, ...).
const KNOWN_ZOO_PREFIXES: &[&str] = &["group.", "weight.", "metricsProvider."];

/// ZooKeeper's defaults for keys that were system properties, said in the
/// note so the user knows whether dropping one changes anything.
const SYSTEM_PROPERTY_DEFAULTS: &[(&str, &str)] = &[
    ("globalOutstandingLimit", "1000"),
    ("snapCount", "100000"),
    ("preAllocSize", "65536"),
];

/// The converted config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The TOML text, with comments saying what was derived and what is missing.
    pub toml: String,
    /// Settings of cluster.xml that have no place in zkfire's config, each
    /// with the reason.
    pub unmapped: Vec<String>,
    /// Settings that were converted but look wrong or need a decision
    /// (a Windows path, two peers on one port, a missing myid, ...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("cluster.xml is not usable XML: {0}")]
    Xml(String),
    #[error("cluster.xml: {0}")]
    Invalid(String),
}

/// Converts the text of a cluster.xml.
pub fn convert(xml: &str) -> Result<Conversion, ImportError> {
    if xml.len() > MAX_INPUT_BYTES {
        return Err(ImportError::Invalid(format!(
            "{} bytes is too large for a cluster.xml (limit {MAX_INPUT_BYTES})",
            xml.len()
        )));
    }
    let body = strip_declaration_and_comments(xml)?;
    if body.trim().is_empty() {
        return Err(ImportError::Invalid("the file holds no element".into()));
    }
    let root = zkfire_xml::parse_element(&body).map_err(|e| ImportError::Xml(e.to_string()))?;
    let old = read(&root)?;
    Ok(render(&old))
}

/// zkfire's XML parser reads XMPP, where comments and an XML declaration
/// inside the stream are refused, but real cluster.xml files have both (one
/// comments out `<zClient>`). Removes them before parsing; everything else
/// (DTDs, entities, processing instructions) is left for the parser to
/// refuse. Comment markers inside CDATA and quoted attribute values are kept.
fn strip_declaration_and_comments(xml: &str) -> Result<String, ImportError> {
    let mut rest = xml.strip_prefix('\u{feff}').unwrap_or(xml).trim_start();
    if let Some(after) = rest.strip_prefix("<?xml") {
        if after.starts_with(|c: char| c.is_ascii_whitespace()) {
            let end = after.find("?>").ok_or_else(|| {
                ImportError::Xml("the XML declaration is not closed with ?>".into())
            })?;
            rest = &after[end + 2..];
        }
    }
    let mut out = String::with_capacity(rest.len());
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        let (keep, skip) = if let Some(body) = rest.strip_prefix("<!--") {
            let end = body
                .find("-->")
                .ok_or_else(|| ImportError::Xml("a comment is not closed with -->".into()))?;
            (0, 4 + end + 3)
        } else if rest.starts_with("<![CDATA[") {
            let end = rest
                .find("]]>")
                .ok_or_else(|| ImportError::Xml("a CDATA section is not closed".into()))?;
            (end + 3, end + 3)
        } else {
            let end = tag_end(rest).unwrap_or(rest.len());
            (end, end)
        };
        out.push_str(&rest[..keep]);
        rest = &rest[skip..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of the tag at the start of `s` (through its `>`), skipping
/// quoted attribute values; `None` when it does not end.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if q == c => quote = None,
            (None, '>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// What cluster.xml says, checked.
#[derive(Debug, Default)]
struct OldCluster {
    notice: Option<String>,
    zclient: Option<String>,
    zoo: Option<OldZoo>,
    unmapped: Vec<String>,
    /// Elements of `<zoo>` ZooKeeper does not know: (key, value).
    zoo_unknown: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct OldZoo {
    tick_time: Option<u32>,
    init_limit: Option<u32>,
    sync_limit: Option<u32>,
    data_dir: String,
    client_port: u16,
    client_address: Option<String>,
    myid: Option<u32>,
    servers: BTreeMap<u64, String>,
    extra: BTreeMap<String, String>,
}

fn invalid<T>(message: String) -> Result<T, ImportError> {
    Err(ImportError::Invalid(message))
}

/// Text of a leaf element, trimmed; an element with children is refused.
fn leaf_text(el: &Element, path: &str) -> Result<String, ImportError> {
    if el.children().next().is_some() {
        return invalid(format!("<{path}> holds elements; a value was expected"));
    }
    Ok(el.text().trim().to_string())
}

fn non_empty(value: String, path: &str) -> Result<String, ImportError> {
    if value.is_empty() {
        return invalid(format!("<{path}> is empty"));
    }
    Ok(value)
}

fn number<T: std::str::FromStr>(value: &str, path: &str, what: &str) -> Result<T, ImportError> {
    value
        .parse()
        .map_err(|_| ImportError::Invalid(format!("<{path}> '{value}' is not {what}")))
}

fn read(root: &Element) -> Result<OldCluster, ImportError> {
    let mut old = OldCluster::default();
    for el in root.children() {
        let name = el.name();
        let once = |present: bool| {
            if present {
                invalid(format!("<{name}> appears twice"))
            } else {
                Ok(())
            }
        };
        match name {
            "notice" => {
                once(old.notice.is_some())?;
                old.notice = Some(non_empty(leaf_text(el, name)?, name)?);
            }
            "zClient" => {
                once(old.zclient.is_some())?;
                let value = non_empty(leaf_text(el, name)?, name)?;
                if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return invalid(format!(
                        "<zClient> '{value}' is not a connect string (host:port,host:port)"
                    ));
                }
                old.zclient = Some(value);
            }
            "zoo" => {
                once(old.zoo.is_some())?;
                old.zoo = Some(read_zoo(el, &mut old.zoo_unknown)?);
            }
            other => old.unmapped.push(format!(
                "<{other}>: not a setting of the old cluster.xml; zkfire has no place for it"
            )),
        }
    }
    if old.notice.is_none() && old.zclient.is_none() && old.zoo.is_none() {
        return invalid(format!(
            "<{}> has no <notice>, <zoo> or <zClient>: not a cluster.xml of the old project",
            root.name()
        ));
    }
    for (key, value) in &old.zoo_unknown {
        old.unmapped.push(unknown_key_note(key, value));
    }
    Ok(old)
}

fn read_zoo(zoo: &Element, unknown: &mut Vec<(String, String)>) -> Result<OldZoo, ImportError> {
    let mut out = OldZoo::default();
    let mut data_dir = None;
    let mut client_port = None;
    let mut seen: HashSet<&str> = HashSet::new();
    for el in zoo.children() {
        let key = el.name();
        let path = format!("zoo/{key}");
        if key != "server" && !seen.insert(key) {
            return invalid(format!("<{path}> appears twice"));
        }
        let value = leaf_text(el, &path)?;
        let positive = |v: &str| -> Result<u32, ImportError> {
            match number::<u32>(v, &path, "a whole number above 0")? {
                0 => invalid(format!("<{path}> must be above 0")),
                n => Ok(n),
            }
        };
        match key {
            "tickTime" => out.tick_time = Some(positive(&value)?),
            "initLimit" => out.init_limit = Some(positive(&value)?),
            "syncLimit" => out.sync_limit = Some(positive(&value)?),
            "dataDir" => data_dir = Some(non_empty(value, &path)?),
            "clientPort" => match number::<u16>(&value, &path, "a port number")? {
                0 => return invalid(format!("<{path}> must not be 0")),
                port => client_port = Some(port),
            },
            "clientPortAddress" => out.client_address = Some(non_empty(value, &path)?),
            "myid" => out.myid = Some(positive(&value)?),
            "server" => {
                let name = el.attr("name").unwrap_or_default();
                let id = name
                    .strip_prefix("server.")
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        ImportError::Invalid(format!(
                            "<zoo/server name=\"{name}\">: the name must be server.N (N from 1)"
                        ))
                    })?;
                let value = non_empty(value, &format!("zoo/server name=\"{name}\""))?;
                if value.split(':').count() < 3 || value.contains(char::is_whitespace) {
                    return invalid(format!(
                        "<zoo/server name=\"{name}\"> '{value}' is not host:peerPort:electionPort"
                    ));
                }
                if out.servers.insert(id, value).is_some() {
                    return invalid(format!("<zoo/server name=\"{name}\"> appears twice"));
                }
            }
            _ if is_known_zoo_key(key) => {
                out.extra.insert(key.to_string(), value);
            }
            _ => unknown.push((key.to_string(), value)),
        }
    }
    // The old project refused to start without these two.
    out.data_dir = data_dir.ok_or_else(|| {
        ImportError::Invalid("<zoo> has no <dataDir> (the old project required it)".into())
    })?;
    out.client_port = client_port.ok_or_else(|| {
        ImportError::Invalid("<zoo> has no <clientPort> (the old project required it)".into())
    })?;
    Ok(out)
}

fn is_known_zoo_key(key: &str) -> bool {
    KNOWN_ZOO_KEYS.contains(&key) || KNOWN_ZOO_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// ` (1000 is ZooKeeper's default anyway)` for a key whose default we know.
fn default_note(key: &str, value: &str) -> String {
    SYSTEM_PROPERTY_DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, d)| {
            if *d == value {
                format!(" ({d} is ZooKeeper's default anyway)")
            } else {
                format!(" (ZooKeeper's default is {d})")
            }
        })
        .unwrap_or_default()
}

fn unknown_key_note(key: &str, value: &str) -> String {
    let default = default_note(key, value);
    format!(
        "<zoo/{key}> = {}: not a zoo.cfg setting; the old project passed it to ZooKeeper as \
         the Java system property zookeeper.{key}. ZooKeeper 3.5+ does the same with unknown \
         zoo.cfg keys, so to keep it add it under [zookeeper.managed.extra]{default}",
        quoted(value)
    )
}

/// A TOML basic string on one line. Written here rather than with the toml
/// crate's value formatting, which turns text with line breaks into a
/// multi-line string: inside a `#` comment that would end the comment and
/// let cluster.xml text become TOML.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, else quoted (`"autopurge.purgeInterval"`
/// bare would be a dotted key, a nested table).
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        quoted(k)
    }
}

/// Host and client port of a `server.N` value for the derived connect
/// string: `host:peer:election[:role][;[clientAddr:]clientPort]`.
fn server_client_endpoint(value: &str, client_port: u16) -> String {
    let (quorum, client) = match value.split_once(';') {
        Some((q, c)) => (q, Some(c.trim())),
        None => (value, None),
    };
    let host = server_host(quorum);
    match client {
        Some(c) if c.contains(':') => {
            let (addr, port) = c.rsplit_once(':').unwrap_or((c, ""));
            let addr = if addr.is_empty() || addr == "0.0.0.0" {
                host
            } else {
                addr
            };
            format!("{addr}:{port}")
        }
        Some(port) if !port.is_empty() => format!("{host}:{port}"),
        _ => format!("{host}:{client_port}"),
    }
}

/// The host of `host:peer:election`, `[v6]:peer:election` kept bracketed.
fn server_host(quorum: &str) -> &str {
    if quorum.starts_with('[') {
        match quorum.find(']') {
            Some(end) => &quorum[..=end],
            None => quorum,
        }
    } else {
        quorum.split(':').next().unwrap_or(quorum)
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Hosts of a connect string `h:p,h:p[/chroot]`.
fn connect_hosts(connect: &str) -> Vec<&str> {
    let servers = connect.split('/').next().unwrap_or(connect);
    servers
        .split(',')
        .map(|s| match s.rsplit_once(':') {
            Some((h, _)) => h,
            None => s,
        })
        .collect()
}

fn looks_like_windows_path(p: &str) -> bool {
    let b = p.as_bytes();
    p.contains('\\') || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Comment lines, wrapped at about 80 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 80 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

fn render(old: &OldCluster) -> Conversion {
    let mut warnings = Vec::new();
    let mut t = String::new();
    comment(
        &mut t,
        "zkfire configuration converted from the old project's cluster.xml. \
         Review it and add what cluster.xml never held: the cluster secret, the \
         PostgreSQL database, and the [server] domain and [c2s] listeners.",
    );

    // [cluster]
    t.push_str("\n[cluster]\nenabled = true\n");
    let myid = old.zoo.as_ref().and_then(|z| z.myid);
    match myid {
        Some(id) => {
            comment(
                &mut t,
                "From <myid>: the old project used the ZooKeeper id as the node's id.",
            );
            let _ = writeln!(t, "node_id = {}", quoted(&format!("node-{id}")));
        }
        None => {
            comment(
                &mut t,
                "Set a name for this node, unique in the cluster and stable across restarts:",
            );
            t.push_str("# node_id = \"node-1\"\n");
            warnings.push("cluster.xml has no <myid>: set [cluster] node_id".into());
        }
    }
    if let Some(notice) = &old.notice {
        comment(
            &mut t,
            "From <notice>, the old inter-node endpoint (Java RMI): now where this \
             node's cluster bus listens, and the address peers use to reach it.",
        );
        if notice.parse::<SocketAddr>().is_ok() {
            let _ = writeln!(
                t,
                "listen = {}\nadvertise = {}",
                quoted(notice),
                quoted(notice)
            );
        } else {
            comment(
                &mut t,
                "listen and advertise take an IP address and port; <notice> was:",
            );
            let _ = writeln!(t, "# listen = {}", quoted(notice));
            warnings.push(format!(
                "<notice> {} is not IP:port: set [cluster] listen (and advertise) by hand",
                quoted(notice)
            ));
        }
    } else {
        comment(
            &mut t,
            "cluster.xml had no <notice>: set where the cluster bus listens.",
        );
        t.push_str("# listen = \"10.0.0.1:7000\"\n");
        warnings.push("cluster.xml has no <notice>: set [cluster] listen".into());
    }
    comment(
        &mut t,
        "Every node needs the same secret, 16 characters or more; cluster.xml had none \
         (the old nodes did not authenticate each other). Set secret_file (its first \
         line is the secret) or secret:",
    );
    t.push_str("# secret_file = \"/etc/zkfire/cluster-secret\"\n");

    // [storage]
    t.push_str("\n[storage]\n");
    comment(
        &mut t,
        "A cluster keeps everything in one shared PostgreSQL database (SQLite is for \
         a single node): set its URL.",
    );
    t.push_str("# url = \"postgres://zkfire@db.example.org/zkfire\"\n");

    // [zookeeper]
    t.push_str("\n[zookeeper]\n");
    let connect = match (&old.zclient, &old.zoo) {
        (Some(zclient), _) => {
            comment(&mut t, "From <zClient>.");
            Some(zclient.clone())
        }
        (None, Some(zoo)) if !zoo.servers.is_empty() => {
            comment(
                &mut t,
                "cluster.xml had no <zClient>: derived, as the old project did, from the \
                 <server> entries and clientPort.",
            );
            let mut endpoints: Vec<String> = Vec::new();
            for value in zoo.servers.values() {
                let endpoint = server_client_endpoint(value, zoo.client_port);
                if !endpoints.contains(&endpoint) {
                    endpoints.push(endpoint);
                }
            }
            Some(endpoints.join(","))
        }
        (None, Some(zoo)) => {
            comment(
                &mut t,
                "cluster.xml had no <zClient> and <zoo> no servers: this node's own \
                 standalone peer.",
            );
            Some(format!("127.0.0.1:{}", zoo.client_port))
        }
        (None, None) => {
            comment(
                &mut t,
                "cluster.xml had no <zClient> and no <zoo>: set the ZooKeeper ensemble.",
            );
            t.push_str("# connect = \"zk1:2181,zk2:2181,zk3:2181\"\n");
            warnings.push("cluster.xml names no ZooKeeper: set [zookeeper] connect".into());
            None
        }
    };
    if let Some(connect) = &connect {
        let _ = writeln!(t, "connect = {}", quoted(connect));
    }

    if let Some(zoo) = &old.zoo {
        render_zoo(
            &mut t,
            zoo,
            connect.as_deref(),
            &old.zoo_unknown,
            &mut warnings,
        );
    }

    let other: Vec<&String> = old
        .unmapped
        .iter()
        .filter(|u| !u.starts_with("<zoo/"))
        .collect();
    if !other.is_empty() {
        t.push('\n');
        comment(&mut t, "Not converted:");
        for note in other {
            comment(&mut t, &format!("- {note}"));
        }
    }
    if !warnings.is_empty() {
        t.push('\n');
        comment(&mut t, "Check before use:");
        for warning in &warnings {
            comment(&mut t, &format!("- {warning}"));
        }
    }
    Conversion {
        toml: t,
        unmapped: old.unmapped.clone(),
        warnings,
    }
}

fn render_zoo(
    t: &mut String,
    zoo: &OldZoo,
    connect: Option<&str>,
    unknown: &[(String, String)],
    warnings: &mut Vec<String>,
) {
    t.push_str("\n[zookeeper.managed]\n");
    comment(t, "From <zoo>: the ZooKeeper peer this node runs itself.");
    for (name, value) in [
        ("tick_time", zoo.tick_time),
        ("init_limit", zoo.init_limit),
        ("sync_limit", zoo.sync_limit),
    ] {
        if let Some(v) = value {
            let _ = writeln!(t, "{name} = {v}");
        }
    }
    if looks_like_windows_path(&zoo.data_dir) {
        comment(
            t,
            "A Windows path, kept as it was: set the folder on this machine.",
        );
        warnings.push(format!(
            "<zoo/dataDir> {} is a Windows path: set [zookeeper.managed] data_dir to a folder on this machine",
            quoted(&zoo.data_dir)
        ));
    }
    let _ = writeln!(t, "data_dir = {}", quoted(&zoo.data_dir));
    let _ = writeln!(t, "client_port = {}", zoo.client_port);

    // The old zoo.cfg usually had no clientPortAddress, so ZooKeeper
    // listened on every address. zkfire's default is loopback; keep what
    // the connect string needs and no more.
    let own_server = zoo.myid.and_then(|id| zoo.servers.get(&u64::from(id)));
    let connect_is_local =
        connect.is_some_and(|c| connect_hosts(c).into_iter().all(is_loopback_host));
    match (&zoo.client_address, own_server) {
        (Some(address), _) => {
            let _ = writeln!(t, "client_address = {}", quoted(address));
        }
        _ if connect_is_local => {
            comment(t, "The connect string names loopback only.");
            t.push_str("client_address = \"127.0.0.1\"\n");
        }
        (None, Some(server)) if old_connect_derived(connect, zoo) => {
            comment(
                t,
                "The old peer listened on every address; the other nodes reach this one \
                 at its own server entry's host.",
            );
            let host = server_host(server);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let _ = writeln!(t, "client_address = {}", quoted(host));
        }
        _ => {
            comment(
                t,
                "The old peer listened on every address, as here: narrow it to the \
                 address the other nodes use if you can.",
            );
            t.push_str("client_address = \"0.0.0.0\"\n");
            warnings.push(
                "[zookeeper.managed] client_address is 0.0.0.0 (every address), as the old peer; narrow it if you can"
                    .into(),
            );
        }
    }
    if let Some(id) = zoo.myid {
        let _ = writeln!(t, "myid = {id}");
        if !zoo.servers.is_empty() && !zoo.servers.contains_key(&u64::from(id)) {
            warnings.push(format!(
                "<zoo/myid> {id} is not among the <server> entries: ZooKeeper will not start"
            ));
        }
    } else if !zoo.servers.is_empty() {
        warnings.push("<zoo> has servers but no <myid>: set [zookeeper.managed] myid".into());
    }

    if !zoo.servers.is_empty() {
        t.push_str("\n[zookeeper.managed.servers]\n");
        for (id, value) in &zoo.servers {
            let _ = writeln!(t, "{id} = {}", quoted(value));
        }
        warnings.extend(shared_ports(&zoo.servers));
    }

    if !zoo.extra.is_empty() || !unknown.is_empty() {
        t.push_str("\n[zookeeper.managed.extra]\n");
        for (k, v) in &zoo.extra {
            let _ = writeln!(t, "{} = {}", key(k), quoted(v));
        }
        for (k, v) in unknown {
            comment(
                t,
                &format!(
                    "Not converted: {k} is not a zoo.cfg setting; the old project made it \
                     the system property zookeeper.{k}. ZooKeeper 3.5+ does that itself \
                     for unknown zoo.cfg keys: uncomment to keep it{}.",
                    default_note(k, v)
                ),
            );
            let _ = writeln!(t, "# {} = {}", key(k), quoted(v));
        }
    }
}

fn old_connect_derived(connect: Option<&str>, zoo: &OldZoo) -> bool {
    connect.is_some_and(|c| {
        zoo.servers
            .values()
            .any(|s| c.contains(&server_client_endpoint(s, zoo.client_port)))
    })
}

/// Two ensemble members on one host with the same peer or election port
/// cannot both run.
fn shared_ports(servers: &BTreeMap<u64, String>) -> Vec<String> {
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (id, value) in servers {
        let quorum = value.split(';').next().unwrap_or(value);
        let host = server_host(quorum);
        let ports: Vec<&str> = quorum[host.len()..]
            .split(':')
            .filter(|p| !p.is_empty())
            .take(2)
            .collect();
        for port in ports {
            let endpoint = format!("{host}:{port}");
            match used.get(&endpoint) {
                Some(other) if other != id => warnings.push(format!(
                    "server.{other} and server.{id} both use {endpoint}: two members on one host need distinct ports"
                )),
                _ => {
                    used.insert(endpoint, *id);
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_declaration_are_removed() {
        let xml = "\u{feff}<?xml version=\"1.0\"?>\n<jive><!-- a <b> -->\
                   <a x='<!--'/><![CDATA[<!-- kept -->]]></jive>";
        assert_eq!(
            strip_declaration_and_comments(xml).unwrap(),
            "\n<jive><a x='<!--'/><![CDATA[<!-- kept -->]]></jive>"
        );
        assert!(strip_declaration_and_comments("<jive><!-- open").is_err());
        assert!(strip_declaration_and_comments("<?xml version='1.0'").is_err());
        // Not a declaration: left to the parser, which refuses it.
        assert!(
            strip_declaration_and_comments("<?xml-stylesheet x?><jive/>")
                .unwrap()
                .starts_with("<?xml-stylesheet")
        );
    }

    #[test]
    fn derived_endpoints() {
        assert_eq!(
            server_client_endpoint("10.0.0.1:2888:3888", 2181),
            "10.0.0.1:2181"
        );
        assert_eq!(
            server_client_endpoint("10.0.0.1:2888:3888:participant;2191", 2181),
            "10.0.0.1:2191"
        );
        assert_eq!(
            server_client_endpoint("10.0.0.1:2888:3888;0.0.0.0:2191", 2181),
            "10.0.0.1:2191"
        );
        assert_eq!(
            server_client_endpoint("[::1]:2888:3888", 2181),
            "[::1]:2181"
        );
    }

    #[test]
    fn strings_stay_on_one_line_and_round_trip() {
        for text in [
            "E:/zoo/data",
            "C:\\zoo\\x",
            "a\nb = \"c\"\n[server]",
            "tab\there\u{7f}\u{1}",
            "ü",
        ] {
            let q = quoted(text);
            assert!(!q.contains('\n'), "{q}");
            let parsed: toml::Table = toml::from_str(&format!("k = {q}")).unwrap();
            assert_eq!(parsed["k"].as_str(), Some(text));
        }
    }

    #[test]
    fn keys_are_quoted_when_dotted() {
        assert_eq!(key("maxClientCnxns"), "maxClientCnxns");
        assert_eq!(
            key("autopurge.purgeInterval"),
            "\"autopurge.purgeInterval\""
        );
    }

    #[test]
    fn shared_ports_are_found() {
        let servers: BTreeMap<u64, String> = [
            (1, "10.0.0.1:2888:3888".to_string()),
            (2, "10.0.0.2:2888:3888".to_string()),
            (3, "10.0.0.1:2888:3889".to_string()),
        ]
        .into();
        assert_eq!(
            shared_ports(&servers),
            ["server.1 and server.3 both use 10.0.0.1:2888: two members on one host need distinct ports"]
        );
    }

    #[test]
    fn comment_lines_are_wrapped() {
        let mut out = String::new();
        comment(&mut out, &"word ".repeat(40));
        assert!(
            out.lines().all(|l| l.starts_with("# ") && l.len() <= 81),
            "{out}"
        );
    }
}
