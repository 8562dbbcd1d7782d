//! Framing of the cluster bus: every unit on the wire is a frame, a u32
//! big-endian length followed by that many bytes.
//!
//! Written by hand rather than with `tokio_util::codec::LengthDelimitedCodec`
//! because that needs the `codec` feature and a futures dependency for a
//! dozen lines, and because the bus wants to read the message header and the
//! payload separately (the payload goes to the handler without a copy).
//!
//! After the handshake a frame holds one [`Message`]: a kind byte, then
//! fixed fields, then (for data) the caller's payload.

use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

const KIND_DATA: u8 = 0;
const KIND_HEARTBEAT: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_RESUME: u8 = 3;

/// Bytes a data frame carries besides its payload (kind and sequence number).
pub const DATA_OVERHEAD: usize = 1 + 8;

#[derive(Debug, Error)]
pub enum FrameError {
    /// The declared length exceeds the limit; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    /// The connection ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The length prefix of a frame of `len` bytes.
pub fn header(len: usize) -> io::Result<[u8; HEADER_LEN]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than u32"))
}

/// One whole frame: prefix and body.
pub fn encode(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header(body.len())?);
    out.extend_from_slice(body);
    Ok(out)
}

/// Reads the length prefix; `None` on a clean end of stream before it.
async fn read_len<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(Some(len)),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        }),
    }
}

/// Reads exactly `len` bytes. The buffer grows with what actually arrives,
/// so a peer that announces a big frame and sends little costs little.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got != len {
        return Err(FrameError::Truncated);
    }
    Ok(body)
}

/// Reads one frame of at most `max` bytes; `None` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    match read_len(r, max).await? {
        None => Ok(None),
        Some(len) => read_body(r, len).await.map(Some),
    }
}

/// Writes one frame made of `parts` (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len = parts.iter().map(|p| p.len()).sum();
    w.write_all(&header(len)?).await?;
    for part in parts {
        w.write_all(part).await?;
    }
    Ok(())
}

/// What authenticated peers exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A caller's payload, numbered within the sender's stream.
    Data { seq: u64, payload: Vec<u8> },
    /// Sent when idle so the other side knows the link is alive.
    Heartbeat,
    /// How many data frames of the other side's stream were handed to the
    /// handler; the other side may forget those.
    Ack { received: u64 },
    /// First message of each side on every connection. `stream` names the
    /// sender's outgoing stream and `next_seq` its oldest unacknowledged
    /// frame; `seen_stream`/`received` tell the other side how far its own
    /// stream got (0/0 when that stream is unknown here).
    Resume {
        stream: u64,
        next_seq: u64,
        seen_stream: u64,
        received: u64,
    },
}

impl Message {
    /// Writes the message as one frame (not flushed).
    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) -> io::Result<()> {
        match self {
            Message::Data { seq, payload } => write_data(w, *seq, payload).await,
            Message::Heartbeat => write_frame(w, &[&[KIND_HEARTBEAT]]).await,
            Message::Ack { received } => {
                write_frame(w, &[&[KIND_ACK], &received.to_be_bytes()]).await
            }
            Message::Resume {
                stream,
                next_seq,
                seen_stream,
                received,
            } => {
                write_frame(
                    w,
                    &[
                        &[KIND_RESUME],
                        &stream.to_be_bytes(),
                        &next_seq.to_be_bytes(),
                        &seen_stream.to_be_bytes(),
                        &received.to_be_bytes(),
                    ],
                )
                .await
            }
        }
    }

    /// Reads one message whose data payload is at most `max_payload` bytes;
    /// `None` on a clean end of stream.
    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut R,
        max_payload: usize,
    ) -> Result<Option<Message>, FrameError> {
        let Some(len) = read_len(r, max_payload.saturating_add(DATA_OVERHEAD)).await? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(FrameError::Malformed("empty frame"));
        }
        let kind = r.read_u8().await.map_err(eof_is_truncated)?;
        let rest = len - 1;
        let msg = match kind {
            KIND_DATA => {
                if rest < 8 {
                    return Err(FrameError::Malformed("short data frame"));
                }
                let seq = r.read_u64().await.map_err(eof_is_truncated)?;
                let payload = read_body(r, rest - 8).await?;
                Message::Data { seq, payload }
            }
            KIND_HEARTBEAT if rest == 0 => Message::Heartbeat,
            KIND_ACK if rest == 8 => Message::Ack {
                received: r.read_u64().await.map_err(eof_is_truncated)?,
            },
            KIND_RESUME if rest == 32 => {
                let mut f = [0u64; 4];
                for v in &mut f {
                    *v = r.read_u64().await.map_err(eof_is_truncated)?;
                }
                Message::Resume {
                    stream: f[0],
                    next_seq: f[1],
                    seen_stream: f[2],
                    received: f[3],
                }
            }
            KIND_HEARTBEAT | KIND_ACK | KIND_RESUME => {
                return Err(FrameError::Malformed("wrong length for its kind"))
            }
            _ => return Err(FrameError::Malformed("unknown kind")),
        };
        Ok(Some(msg))
    }
}

/// Writes a data frame without copying the payload into a new buffer.
pub async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u64,
    payload: &[u8],
) -> io::Result<()> {
    write_frame(w, &[&[KIND_DATA], &seq.to_be_bytes(), payload]).await
}

fn eof_is_truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Hands out its bytes one at a time, so every read is a split read.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.1 < self.0.len() && buf.remaining() > 0 {
                let b = self.0[self.1];
                buf.put_slice(&[b]);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn encode_msg(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.write(&mut out).await.expect("write to a Vec");
        out
    }

    #[tokio::test]
    async fn frames_round_trip_through_split_reads() {
        let mut wire = encode(b"hello").expect("encode");
        wire.extend(encode(b"").expect("encode"));
        wire.extend(encode(&[7u8; 1000]).expect("encode"));
        let mut r = Trickle(wire, 0);
        assert_eq!(
            read_frame(&mut r, 4096).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut r, 4096).await.unwrap(), Some(Vec::new()));
        assert_eq!(
            read_frame(&mut r, 4096).await.unwrap(),
            Some(vec![7u8; 1000])
        );
        assert_eq!(read_frame(&mut r, 4096).await.unwrap(), None);
    }

    #[tokio::test]
    async fn messages_round_trip_through_split_reads() {
        let msgs = vec![
            Message::Resume {
                stream: 1,
                next_seq: 2,
                seen_stream: 3,
                received: 4,
            },
            Message::Data {
                seq: 9,
                payload: b"payload".to_vec(),
            },
            Message::Data {
                seq: 10,
                payload: Vec::new(),
            },
            Message::Heartbeat,
            Message::Ack { received: u64::MAX },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend(encode_msg(m).await);
        }
        let mut r = Trickle(wire, 0);
        for m in &msgs {
            assert_eq!(Message::read(&mut r, 100).await.unwrap().as_ref(), Some(m));
        }
        assert!(Message::read(&mut r, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversize_length_is_refused_before_reading_the_body() {
        // Only the prefix is sent: a reader that allocated or waited for the
        // body would not return an error here.
        let mut r = Trickle(u32::MAX.to_be_bytes().to_vec(), 0);
        match read_frame(&mut r, 1024).await {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let big = encode_msg(&Message::Data {
            seq: 0,
            payload: vec![0; 101],
        })
        .await;
        let mut r = Trickle(big, 0);
        assert!(matches!(
            Message::read(&mut r, 100).await,
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_and_malformed_frames_are_errors() {
        let mut cut = encode(b"abcdef").expect("encode");
        cut.truncate(7);
        assert!(matches!(
            read_frame(&mut Trickle(cut, 0), 100).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut Trickle(vec![0, 0], 0), 100).await,
            Err(FrameError::Truncated)
        ));
        for body in [
            &[][..],
            &[9u8][..],
            &[KIND_ACK, 1][..],
            &[KIND_DATA, 0, 0][..],
        ] {
            let wire = encode(body).expect("encode");
            assert!(
                matches!(
                    Message::read(&mut Trickle(wire, 0), 100).await,
                    Err(FrameError::Malformed(_))
                ),
                "{body:?}"
            );
        }
    }
}
