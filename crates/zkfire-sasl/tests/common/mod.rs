//! Helpers shared by the integration tests: connections, accounts and a
//! driver that runs a whole SCRAM exchange with the test client.

#![allow(dead_code)] // each test file uses a different subset

use zkfire_sasl::client::ScramClient;
use zkfire_sasl::{
    ChannelBinding, Mechanism, ServerSession, Step, UserCredentials, DEFAULT_ITERATIONS,
};

/// The tls-exporter value both ends see on the test connection.
pub const EXPORTER: [u8; 32] = [0x42; 32];

/// A TLS 1.3 connection: -PLUS is offered.
pub fn tls13() -> ChannelBinding {
    ChannelBinding {
        tls: true,
        tls_exporter: Some(EXPORTER.to_vec()),
    }
}

/// TLS without an exporter value (e.g. TLS 1.2): no -PLUS.
pub fn tls12() -> ChannelBinding {
    ChannelBinding {
        tls: true,
        tls_exporter: None,
    }
}

pub fn cleartext() -> ChannelBinding {
    ChannelBinding::default()
}

pub fn account(password: &str) -> UserCredentials {
    UserCredentials::from_password(password, DEFAULT_ITERATIONS).unwrap()
}

pub const SCRAM_MECHANISMS: [Mechanism; 4] = [
    Mechanism::ScramSha256Plus,
    Mechanism::ScramSha1Plus,
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
];

/// How far an exchange got.
pub struct Run {
    /// The first step's result (normally `NeedCredentials`).
    pub first: Step,
    /// server-first-message, if one was sent.
    pub server_first: Option<Vec<u8>>,
    /// The last step's result.
    pub end: Step,
    pub client: ScramClient,
    pub session: ServerSession,
}

/// Runs client and server against each other, stopping at the first
/// failure. `account` is what the lookup returns.
pub fn run_scram(
    mechanism: Mechanism,
    binding: ChannelBinding,
    mut client: ScramClient,
    account: Option<UserCredentials>,
) -> Run {
    let mut session = ServerSession::new(mechanism, binding);
    let first = session.step(&client.client_first());
    if !matches!(first, Step::NeedCredentials { .. }) {
        return Run {
            end: first.clone(),
            first,
            server_first: None,
            client,
            session,
        };
    }
    let server_first = match session.credentials(account) {
        Step::Challenge(msg) => msg,
        other => {
            return Run {
                first,
                server_first: None,
                end: other,
                client,
                session,
            }
        }
    };
    let client_final = client
        .client_final(&server_first)
        .expect("the client accepts the server-first-message");
    let end = session.step(&client_final);
    Run {
        first,
        server_first: Some(server_first),
        end,
        client,
        session,
    }
}

/// Feeds a hand-written client-first-message to a fresh session.
pub fn first_step(mechanism: Mechanism, binding: ChannelBinding, msg: &[u8]) -> Step {
    ServerSession::new(mechanism, binding).step(msg)
}
