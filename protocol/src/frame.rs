//! Framing for stream transports (TLS over TCP): many requests share one byte stream and
//! their answers may come back in any order, so each frame carries a request id.
//!
//! ```text
//! frame = length (u32 BE) || request id (u64 BE) || body
//! ```
//!
//! `length` counts the id and the body: 8 ≤ length ≤ 8 + [`MAX_MESSAGE`]. A reader reads the
//! 4-byte header, checks it with [`payload_len`] *before* allocating, reads that many bytes
//! and splits them with [`parse_payload`]. A bad header cannot be recovered from (the stream
//! has lost its framing), so the connection must be closed after answering it.

use crate::limits::MAX_MESSAGE;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// Bytes of the request id.
pub const ID_LEN: usize = 8;
/// Largest `length` field accepted.
pub const MAX_PAYLOAD: usize = ID_LEN + MAX_MESSAGE;

/// A frame that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is above [`MAX_PAYLOAD`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(u64),
    /// The length field is below [`ID_LEN`].
    #[error("frame of {0} bytes is too short to hold a request id")]
    TooShort(u64),
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Chosen by the client; the answer carries the same id.
    pub id: u64,
    /// An encoded `Request` or `Response`.
    pub body: Vec<u8>,
}

/// Encodes a frame. `body` must be at most [`MAX_MESSAGE`] bytes (encoders of this crate
/// never produce more).
pub fn encode(id: u64, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(ID_LEN + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + ID_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks a header and returns how many bytes follow it.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    let len64 = u64::from(len);
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge(len64))?;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len64));
    }
    if len < ID_LEN {
        return Err(FrameError::TooShort(len64));
    }
    Ok(len)
}

/// Splits a payload (what follows the header) into id and body.
pub fn parse_payload(mut payload: Vec<u8>) -> Result<Frame, FrameError> {
    let n = payload.len();
    if n < ID_LEN {
        return Err(FrameError::TooShort(n as u64));
    }
    if n > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(n as u64));
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(payload.get(..ID_LEN).unwrap_or(&[0; ID_LEN]));
    payload.drain(..ID_LEN);
    Ok(Frame {
        id: u64::from_be_bytes(id),
        body: payload,
    })
}

/// Parses a buffer that must hold exactly one frame: a transport that carries each frame
/// in a message of its own (WebSocket). `None` if the header is bad, or its length is not
/// exactly what follows it.
pub fn parse_exact(data: &[u8]) -> Option<Frame> {
    let header: [u8; HEADER_LEN] = data.get(..HEADER_LEN)?.try_into().ok()?;
    let len = payload_len(header).ok()?;
    let payload = data.get(HEADER_LEN..)?;
    if payload.len() != len {
        return None;
    }
    parse_payload(payload.to_vec()).ok()
}

/// Parses every complete frame at the start of `buf` (for fuzzing and tests; the transports
/// read header and payload separately). Returns the frames and the bytes consumed.
pub fn parse_all(buf: &[u8]) -> Result<(Vec<Frame>, usize), FrameError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + HEADER_LEN) {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let len = payload_len(h)?;
        let Some(payload) = buf.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
            break;
        };
        frames.push(parse_payload(payload.to_vec())?);
        at += HEADER_LEN + len;
    }
    Ok((frames, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_round_trips() {
        let f = encode(42, b"hello");
        let (frames, used) = parse_all(&f).unwrap();
        assert_eq!(used, f.len());
        assert_eq!(
            frames,
            vec![Frame {
                id: 42,
                body: b"hello".to_vec()
            }]
        );
    }

    #[test]
    fn rejects_a_length_of_four_gib_before_allocating() {
        assert_eq!(
            payload_len([0xff; 4]),
            Err(FrameError::TooLarge(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn rejects_a_frame_too_short_for_its_id() {
        assert_eq!(payload_len([0, 0, 0, 7]), Err(FrameError::TooShort(7)));
        assert!(payload_len([0, 0, 0, 8]).is_ok());
    }

    #[test]
    fn a_truncated_frame_waits_for_more_bytes() {
        let f = encode(1, b"abc");
        for n in 0..f.len() {
            let (frames, used) = parse_all(&f[..n]).unwrap();
            assert!(frames.is_empty());
            assert_eq!(used, 0);
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..10)) {
            let mut buf = Vec::new();
            for (id, body) in &frames {
                buf.extend(encode(*id, body));
            }
            let (parsed, used) = parse_all(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            let back: Vec<_> = parsed.into_iter().map(|f| (f.id, f.body)).collect();
            prop_assert_eq!(back, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_all(&b);
        }
    }
}
