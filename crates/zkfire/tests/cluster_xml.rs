//! `cluster.xml` of the old Java project → zkfire's TOML, with the real files
//! its users wrote (tests/fixtures/cluster-xml).

use std::net::SocketAddr;
use zkfire::cluster_xml::{convert, Conversion, ImportError};
use zkfire::config::Config;

const V1: &str = include_str!("fixtures/cluster-xml/v1-cluster.xml");
const V2: &str = include_str!("fixtures/cluster-xml/v2-cluster.xml");

fn converted(xml: &str) -> (Conversion, Config) {
    let conversion = convert(xml).unwrap_or_else(|e| panic!("{e}"));
    let config =
        Config::parse(&conversion.toml).unwrap_or_else(|e| panic!("{e}\n{}", conversion.toml));
    (conversion, config)
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn version_1() {
    let (conversion, config) = converted(V1);
    assert!(config.cluster.enabled);
    assert_eq!(config.cluster.node_id, "node-1");
    assert_eq!(config.cluster.listen, addr("10.10.152.180:3004"));
    assert_eq!(config.cluster.advertise, addr("10.10.152.180:3004"));
    // The commented-out <zClient> is not used: derived from the servers.
    assert_eq!(
        config.zookeeper.connect.as_deref(),
        Some("10.10.152.180:3181,10.10.152.185:3181,10.10.152.189:3181")
    );
    assert!(conversion.toml.contains("no <zClient>: derived"));
    let zoo = config.zookeeper.managed.expect("[zookeeper.managed]");
    assert_eq!(
        (zoo.tick_time, zoo.init_limit, zoo.sync_limit),
        (2000, 10, 5)
    );
    assert_eq!(zoo.data_dir.to_str(), Some("E:/zoo/data"));
    assert_eq!(zoo.client_port, 3181);
    assert_eq!(zoo.client_address, "10.10.152.180");
    assert_eq!(zoo.myid, 1);
    let servers: Vec<(&str, &str)> = zoo
        .servers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        servers,
        [
            ("1", "10.10.152.180:2888:3888"),
            ("2", "10.10.152.185:2888:3888"),
            ("3", "10.10.152.189:2888:3888"),
        ]
    );
    // globalOutstandingLimit was a system property: reported, left commented.
    assert!(zoo.extra.is_empty(), "{:?}", zoo.extra);
    assert_eq!(conversion.unmapped.len(), 1, "{:?}", conversion.unmapped);
    assert!(conversion.unmapped[0].contains("globalOutstandingLimit"));
    assert!(conversion.unmapped[0].contains("system property"));
    assert!(conversion
        .toml
        .contains("# globalOutstandingLimit = \"1000\""));
    assert!(conversion
        .warnings
        .iter()
        .any(|w| w.contains("Windows path")));
}

#[test]
fn version_2() {
    let (conversion, config) = converted(V2);
    let zoo = config.zookeeper.managed.expect("[zookeeper.managed]");
    assert_eq!(
        zoo.extra.get("autopurge.purgeInterval").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        zoo.extra
            .get("autopurge.snapRetainCount")
            .map(String::as_str),
        Some("30")
    );
    assert_eq!(zoo.extra.len(), 2);
    assert_eq!(
        zoo.servers.get("3").map(String::as_str),
        Some("10.10.152.180:2888:3889")
    );
    // Two servers on one host: one connect entry, and a warning about the port.
    assert_eq!(
        config.zookeeper.connect.as_deref(),
        Some("10.10.152.180:3181,10.10.152.185:3181")
    );
    assert!(
        conversion
            .warnings
            .iter()
            .any(|w| w.contains("server.1 and server.3 both use 10.10.152.180:2888")),
        "{:?}",
        conversion.warnings
    );
    assert!(conversion.toml.contains("# Check before use:"));
}

#[test]
fn output_says_what_to_add_and_validates_once_added() {
    let (conversion, _) = converted(V1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zkfire.toml");
    std::fs::write(&path, &conversion.toml).unwrap();
    // As converted: the secret is missing (and then PostgreSQL).
    let err = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("secret"), "{err}");
    assert!(conversion.toml.contains("# secret_file = "));
    assert!(conversion.toml.contains("PostgreSQL"));
    assert!(conversion.toml.contains("# url = \"postgres://"));
    let completed = conversion
        .toml
        .replace("# secret_file = ", "secret_file = ")
        .replace("# url = ", "url = ");
    std::fs::write(&path, completed).unwrap();
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn external_zookeeper_only() {
    let xml = "<jive><notice>10.0.0.5:3004</notice><zClient>127.0.0.1:3181</zClient></jive>";
    let (conversion, config) = converted(xml);
    assert_eq!(config.zookeeper.connect.as_deref(), Some("127.0.0.1:3181"));
    assert!(config.zookeeper.managed.is_none());
    assert_eq!(config.cluster.listen, addr("10.0.0.5:3004"));
    // No <myid>: node_id is left for the user.
    assert_eq!(config.cluster.node_id, "");
    assert!(conversion.warnings.iter().any(|w| w.contains("node_id")));
}

#[test]
fn zclient_wins_over_derivation_and_loopback_stays_loopback() {
    let xml = "<jive><notice>10.0.0.5:3004</notice><zClient>127.0.0.1:3181</zClient>\
               <zoo><dataDir>/var/lib/zk</dataDir><clientPort>3181</clientPort><myid>2</myid>\
               <server name='server.1'>10.0.0.4:2888:3888</server>\
               <server name='server.2'>10.0.0.5:2888:3888</server>\
               <maxClientCnxns>60</maxClientCnxns></zoo></jive>";
    let (conversion, config) = converted(xml);
    assert_eq!(config.zookeeper.connect.as_deref(), Some("127.0.0.1:3181"));
    let zoo = config.zookeeper.managed.unwrap();
    assert_eq!(zoo.client_address, "127.0.0.1");
    assert_eq!(
        zoo.extra.get("maxClientCnxns").map(String::as_str),
        Some("60")
    );
    assert_eq!(config.cluster.node_id, "node-2");
    assert!(conversion.unmapped.is_empty());
    assert!(conversion.warnings.is_empty(), "{:?}", conversion.warnings);
}

#[test]
fn hostnames_and_odd_values_still_give_valid_toml() {
    let xml = "<jive><notice>node1.example.org:3004</notice>\
               <zoo><dataDir>C:\\zoo\\\"data\"</dataDir><clientPort>2181</clientPort>\
               <weird.key>a\nb = \"c\"\n[server]</weird.key></zoo><extra>x</extra></jive>";
    let (conversion, config) = converted(xml);
    assert_eq!(config.cluster.listen, None);
    assert!(conversion
        .warnings
        .iter()
        .any(|w| w.contains("not IP:port")));
    let zoo = config.zookeeper.managed.unwrap();
    assert_eq!(zoo.data_dir.to_str(), Some("C:\\zoo\\\"data\""));
    // Standalone: the node's own peer.
    assert_eq!(config.zookeeper.connect.as_deref(), Some("127.0.0.1:2181"));
    // Text with line breaks cannot break out of a comment.
    assert_eq!(config.server.domain, "localhost");
    assert_eq!(conversion.unmapped.len(), 2, "{:?}", conversion.unmapped);
    assert!(conversion.unmapped.iter().any(|u| u.starts_with("<extra>")));
}

fn error(xml: &str) -> String {
    match convert(xml) {
        Ok(c) => panic!("accepted: {xml}\n{}", c.toml),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_input_is_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        ("", "no element"),
        ("   \n", "no element"),
        ("<!-- only a comment -->", "no element"),
        ("not xml at all", "not usable XML"),
        ("<jive><notice>1.2.3.4:5</notice>", "not usable XML"),
        ("<jive><notice>1.2.3.4:5</jive>", "not usable XML"),
        ("<jive><!-- never closed </jive>", "comment is not closed"),
        ("<?xml version='1.0'", "declaration is not closed"),
        (
            "<!DOCTYPE jive [<!ENTITY a 'aaaa'>]><jive><notice>&a;</notice></jive>",
            "not usable XML",
        ),
        ("<jive><notice>&unknown;</notice></jive>", "not usable XML"),
        ("<?pi x?><jive/>", "not usable XML"),
        ("<jive/>", "not a cluster.xml"),
        ("<jive><other/></jive>", "not a cluster.xml"),
        ("<jive><notice/></jive>", "<notice> is empty"),
        ("<jive><notice>a</notice><notice>b</notice></jive>", "appears twice"),
        ("<jive><zClient>a b</zClient></jive>", "not a connect string"),
        ("<jive><zoo><clientPort>1</clientPort></zoo></jive>", "no <dataDir>"),
        ("<jive><zoo><dataDir>d</dataDir></zoo></jive>", "no <clientPort>"),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>99999</clientPort></zoo></jive>",
            "not a port number",
        ),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>1</clientPort><tickTime>fast</tickTime></zoo></jive>",
            "<zoo/tickTime> 'fast' is not a whole number",
        ),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>1</clientPort><myid>0</myid></zoo></jive>",
            "must be above 0",
        ),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>1</clientPort><server>h:1:2</server></zoo></jive>",
            "must be server.N",
        ),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>1</clientPort><server name='server.1'>h:1</server></zoo></jive>",
            "not host:peerPort:electionPort",
        ),
        (
            "<jive><zoo><dataDir>d</dataDir><clientPort>1</clientPort>\
             <server name='server.1'>h:1:2</server><server name='server.1'>h:3:4</server></zoo></jive>",
            "appears twice",
        ),
        (
            "<jive><zoo><dataDir><x/></dataDir><clientPort>1</clientPort></zoo></jive>",
            "holds elements",
        ),
    ];
    for (xml, expected) in cases {
        let err = error(xml);
        assert!(err.contains(expected), "{xml}: {err} (expected {expected})");
    }
    let huge = format!("<jive>{}</jive>", " ".repeat(2 << 20));
    assert!(error(&huge).contains("too large"));
    let deep = format!("<jive>{}{}</jive>", "<a>".repeat(200), "</a>".repeat(200));
    assert!(error(&deep).contains("not usable XML"));
}

/// Every truncation of a real file gives a result or an error, never a panic.
#[test]
fn truncated_files_never_panic() {
    for text in [V1, V2] {
        for (i, _) in text.char_indices() {
            let _ = convert(&text[..i]);
        }
    }
    let err: ImportError = convert(&V1[..V1.len() / 2]).unwrap_err();
    assert!(matches!(err, ImportError::Xml(_)), "{err}");
}
