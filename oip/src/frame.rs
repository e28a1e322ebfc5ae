//! gRPC's length-prefixed message framing, for unary calls: one frame, a 5-byte prefix
//! (compressed flag, big-endian u32 length) and the message.
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// The prefix of a frame: one flag byte and a four-byte length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Why a body is not one decodable unary message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty body: no message")]
    Empty,
    #[error("body of {len} bytes ends inside a frame")]
    Truncated { len: usize },
    /// The router cannot compare what it cannot decompress.
    #[error("compressed message")]
    Compressed,
    #[error("frame flag {0}, expected 0 or 1")]
    BadFlag(u8),
    #[error("message of {len} bytes over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{extra} bytes after the message: a unary answer holds one frame")]
    TrailingData { extra: usize },
    #[error("not a valid message: {0}")]
    Malformed(#[from] prost::DecodeError),
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Compressed => "compressed",
            DecodeError::BadFlag(_) => "bad_flag",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TrailingData { .. } => "trailing_data",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// The message as one uncompressed gRPC frame.
///
/// # Panics
/// If the message encodes to 4 GiB or more, which a frame's length cannot say.
pub fn encode_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let prefix = u32::try_from(len).expect("a gRPC message is below 4 GiB");
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    // A BytesMut grows as needed, so encoding into it cannot run out of room.
    message
        .encode(&mut buf)
        .expect("encoding into a growable buffer");
    buf.freeze()
}

/// The message of a unary call's body: exactly one uncompressed frame whose message is at
/// most `max_message` bytes, not yet decoded. Never panics, whatever the body.
pub fn unary_payload(body: &[u8], max_message: usize) -> Result<&[u8], DecodeError> {
    let Some((header, rest)) = body.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(if body.is_empty() {
            DecodeError::Empty
        } else {
            DecodeError::Truncated { len: body.len() }
        });
    };
    let [flag, length @ ..] = *header;
    match flag {
        0 => {}
        1 => return Err(DecodeError::Compressed),
        other => return Err(DecodeError::BadFlag(other)),
    }
    // A length that does not fit a usize is over any limit too.
    let len = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
    if len > max_message {
        return Err(DecodeError::TooLarge {
            len,
            max: max_message,
        });
    }
    let Some((message, extra)) = rest.split_at_checked(len) else {
        return Err(DecodeError::Truncated { len: body.len() });
    };
    if !extra.is_empty() {
        return Err(DecodeError::TrailingData { extra: extra.len() });
    }
    Ok(message)
}

/// Decodes a unary call's body (see `unary_payload`). Never panics, whatever the body.
pub fn decode_unary<M: Message + Default>(
    body: &[u8],
    max_message: usize,
) -> Result<M, DecodeError> {
    Ok(M::decode(unary_payload(body, max_message)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ModelReadyRequest, ServerLiveResponse};

    fn ready() -> ModelReadyRequest {
        ModelReadyRequest {
            name: "churn".into(),
            version: "v1".into(),
        }
    }

    #[test]
    fn round_trip() {
        let frame = encode_frame(&ready());
        assert_eq!(frame[0], 0);
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - FRAME_HEADER_LEN
        );
        let back: ModelReadyRequest = decode_unary(&frame, 1024).unwrap();
        assert_eq!(back, ready());
    }

    #[test]
    fn an_empty_message_is_a_five_byte_frame() {
        let frame = encode_frame(&ServerLiveResponse { live: false });
        assert_eq!(&frame[..], &[0, 0, 0, 0, 0]);
        let back: ServerLiveResponse = decode_unary(&frame, 0).unwrap();
        assert!(!back.live);
    }

    #[test]
    fn bodies_that_are_not_one_frame() {
        let frame = encode_frame(&ready());
        let decode = |body: &[u8], max: usize| decode_unary::<ModelReadyRequest>(body, max);
        assert_eq!(decode(&[], 1024).unwrap_err().label(), "empty");
        assert_eq!(decode(&frame[..3], 1024).unwrap_err().label(), "truncated");
        assert_eq!(
            decode(&frame[..frame.len() - 1], 1024).unwrap_err().label(),
            "truncated"
        );
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        assert!(matches!(
            decode(&two, 1024),
            Err(DecodeError::TrailingData { extra }) if extra == frame.len()
        ));
        let len = frame.len() - FRAME_HEADER_LEN;
        assert!(matches!(
            decode(&frame, len - 1),
            Err(DecodeError::TooLarge { len: l, max }) if l == len && max == len - 1
        ));
        decode(&frame, len).unwrap();
        // A huge declared length is over the limit before it is found missing.
        assert_eq!(
            decode(&[0, 0xff, 0xff, 0xff, 0xff], 1 << 20)
                .unwrap_err()
                .label(),
            "too_large"
        );
        let mut compressed = frame.to_vec();
        compressed[0] = 1;
        assert_eq!(decode(&compressed, 1024).unwrap_err().label(), "compressed");
        compressed[0] = 7;
        assert_eq!(decode(&compressed, 1024).unwrap_err().label(), "bad_flag");
        // A field of wire type 7 does not exist.
        assert_eq!(
            decode(&[0, 0, 0, 0, 1, 0x0f], 1024).unwrap_err().label(),
            "malformed"
        );
    }
}
