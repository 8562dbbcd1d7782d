//! No race loses a message: messages sent while the recipient is logging in
//! on another node arrive, live or from offline storage, each exactly once
//! and in the order sent.

mod common;
use common::cluster::TestCluster;
use common::steps::body;
use common::Client;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn messages_racing_a_login_on_another_node_all_arrive_once() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 40;
    for round in 0..ROUNDS {
        // Alice writes steadily while bob logs in on the other node.
        let sender = async {
            for i in 0..PER_ROUND {
                a.send(&format!(
                    "<message to='bob@localhost' type='chat'><body>r{round}-{i}</body></message>"
                ))
                .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            a.iq(
                "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
                "p",
            )
            .await;
        };
        let receiver = async {
            let mut b = Client::login(cluster.node(1), "bob", "pw", &format!("b{round}")).await;
            b.send("<presence/>").await;
            b
        };
        let ((), mut b) = tokio::join!(sender, receiver);
        let mut order = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        while seen.len() < PER_ROUND {
            let m = b.next_matching(|e| e.name() == "message").await;
            let text = body(&m).unwrap_or_default();
            *seen.entry(text.clone()).or_default() += 1;
            order.push(text);
        }
        let extra = b
            .none_within(Duration::from_millis(500), |e| e.name() == "message")
            .await;
        assert!(
            extra.is_ok(),
            "round {round}: a message came twice: {extra:?}"
        );
        for i in 0..PER_ROUND {
            assert_eq!(
                seen.get(&format!("r{round}-{i}")),
                Some(&1),
                "round {round}, message {i}"
            );
        }
        // And in the order sent, whichever way each one came.
        let sent: Vec<String> = (0..PER_ROUND).map(|i| format!("r{round}-{i}")).collect();
        assert_eq!(order, sent, "round {round}");
        // Bob leaves before the next round, so its messages start offline again.
        b.send("</stream:stream>").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
