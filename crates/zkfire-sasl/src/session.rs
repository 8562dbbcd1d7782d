//! One SASL exchange on the server side: the state machine that routes the
//! client's messages to SCRAM or PLAIN and refuses anything out of order.

use std::mem;

use crate::{crypto, plain, scram};
use crate::{ChannelBinding, Failure, Mechanism, Step, UserCredentials, MAX_MESSAGE_LEN};

enum State {
    /// Nothing received yet; `challenged` once the empty challenge that asks
    /// for the first message has been sent.
    Start {
        challenged: bool,
    },
    ScramCredentials(scram::AwaitingCredentials),
    ScramFinal(scram::AwaitingFinal),
    PlainCredentials(plain::AwaitingCredentials),
    /// Succeeded or failed; nothing more is accepted.
    Done,
}

/// One authentication attempt. Every refusal ends it: after a
/// [`Step::Failure`] or [`Step::Success`] further calls fail too.
pub struct ServerSession {
    mechanism: Mechanism,
    binding: ChannelBinding,
    state: State,
    /// Lets the RFC examples pin the server nonce; never set otherwise.
    #[cfg(test)]
    fixed_server_nonce: Option<String>,
}

impl ServerSession {
    pub fn new(mechanism: Mechanism, binding: ChannelBinding) -> Self {
        ServerSession {
            mechanism,
            binding,
            state: State::Start { challenged: false },
            #[cfg(test)]
            fixed_server_nonce: None,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's initial response (possibly empty) or a later
    /// response, already base64-decoded.
    ///
    /// A response longer than [`MAX_MESSAGE_LEN`], not UTF-8, or arriving
    /// when none is expected (after the end, or while credentials are
    /// awaited) gives `MalformedRequest`; PLAIN without TLS gives
    /// `EncryptionRequired`.
    pub fn step(&mut self, input: &[u8]) -> Step {
        match mem::replace(&mut self.state, State::Done) {
            State::Start { challenged } => self.first_message(input, challenged),
            State::ScramFinal(exchange) => match as_text(input) {
                Ok(msg) => exchange.receive_client_final(msg),
                Err(failure) => Step::Failure(failure),
            },
            State::ScramCredentials(_) | State::PlainCredentials(_) | State::Done => {
                Step::Failure(Failure::MalformedRequest)
            }
        }
    }

    /// Answers [`Step::NeedCredentials`]; `None` when there is no such account
    /// (SCRAM then goes on with made-up values so that the answer does not tell
    /// who exists, and fails at the end).
    ///
    /// Called when no credentials were asked for → `TemporaryAuthFailure`
    /// (a bug of the caller, not of the client).
    pub fn credentials(&mut self, creds: Option<UserCredentials>) -> Step {
        match mem::replace(&mut self.state, State::Done) {
            State::ScramCredentials(exchange) => {
                let Some(server_nonce) = self.server_nonce() else {
                    return Step::Failure(Failure::TemporaryAuthFailure);
                };
                match exchange.answer(creds, &server_nonce) {
                    Ok((next, server_first)) => {
                        self.state = State::ScramFinal(next);
                        Step::Challenge(server_first)
                    }
                    Err(failure) => Step::Failure(failure),
                }
            }
            State::PlainCredentials(exchange) => exchange.verify(creds),
            State::Start { .. } | State::ScramFinal(_) | State::Done => {
                Step::Failure(Failure::TemporaryAuthFailure)
            }
        }
    }

    fn first_message(&mut self, input: &[u8], challenged: bool) -> Step {
        // PLAIN would expose the password on a clear connection; the caller
        // does not offer it then, and this refuses it should a client ask.
        if self.mechanism == Mechanism::Plain && !self.binding.tls {
            return Step::Failure(Failure::EncryptionRequired);
        }
        if input.is_empty() {
            // No initial response: ask for the first message with an empty
            // challenge (RFC 6120 section 6.4.2), once.
            if challenged {
                return Step::Failure(Failure::MalformedRequest);
            }
            self.state = State::Start { challenged: true };
            return Step::Challenge(Vec::new());
        }
        let msg = match as_text(input) {
            Ok(msg) => msg,
            Err(failure) => return Step::Failure(failure),
        };
        let started = if self.mechanism == Mechanism::Plain {
            plain::receive(msg).map(|exchange| {
                let username = exchange.username().to_owned();
                (State::PlainCredentials(exchange), username)
            })
        } else {
            scram::receive_client_first(self.mechanism, &self.binding, msg).map(|exchange| {
                let username = exchange.username().to_owned();
                (State::ScramCredentials(exchange), username)
            })
        };
        match started {
            Ok((state, username)) => {
                self.state = state;
                Step::NeedCredentials { username }
            }
            Err(failure) => Step::Failure(failure),
        }
    }

    fn server_nonce(&self) -> Option<String> {
        #[cfg(test)]
        if let Some(nonce) = &self.fixed_server_nonce {
            return Some(nonce.clone());
        }
        crypto::random_nonce()
    }

    #[cfg(test)]
    pub(crate) fn fix_server_nonce(&mut self, nonce: &str) {
        self.fixed_server_nonce = Some(nonce.to_owned());
    }
}

/// Bounds the size before anything else looks at hostile input.
fn as_text(input: &[u8]) -> Result<&str, Failure> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(Failure::MalformedRequest);
    }
    std::str::from_utf8(input).map_err(|_| Failure::MalformedRequest)
}
