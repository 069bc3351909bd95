//! Encoding and decoding of every message, with the size bound checked first and trailing
//! bytes refused, so that one message has exactly one encoding that is accepted.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::DecodeError;

/// Encodes a message with postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail: every type is plain data and
    // postcard only fails on writer exhaustion, which a Vec does not have.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a whole message of at most `max` bytes; refuses trailing bytes and any encoding
/// other than the one [`encode`] makes (postcard alone accepts overlong varints), so that a
/// message has exactly one accepted encoding.
pub fn decode<T: DeserializeOwned + Serialize>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// A byte string with at most `N` bytes, checked while decoding before anything is copied.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes<const N: usize>(Vec<u8>);

impl<const N: usize> Bytes<N> {
    /// Wraps `bytes`, or returns `None` if they are longer than `N`.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() <= N).then_some(Self(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, by value.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> std::fmt::Debug for Bytes<N> {
    // Only the length: these carry ciphertexts and OPAQUE messages, which are long and say
    // nothing useful in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl<const N: usize> Serialize for Bytes<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Bytes<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for Visitor<N> {
            type Value = Bytes<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {N} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                if v.len() > N {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                if v.len() > N {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_bytes(Visitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bytes_longer_than_the_bound() {
        let long = encode(&Bytes::<8>(vec![0; 9]));
        assert!(decode::<Bytes<8>>(&long, 100).is_err());
        let ok = encode(&Bytes::<8>(vec![7; 8]));
        assert_eq!(decode::<Bytes<8>>(&ok, 100).unwrap().as_slice(), &[7; 8]);
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut b = encode(&Bytes::<8>(vec![1, 2]));
        b.push(0);
        assert_eq!(
            decode::<Bytes<8>>(&b, 100),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn refuses_an_overlong_varint() {
        // Length 2 written as two bytes (0x82 0x00) instead of one (0x02).
        assert_eq!(
            decode::<Bytes<8>>(&[0x82, 0x00, 1, 2], 100),
            Err(DecodeError::NonCanonical)
        );
        assert!(decode::<Bytes<8>>(&[0x02, 1, 2], 100).is_ok());
    }

    #[test]
    fn refuses_input_over_the_message_bound_before_decoding() {
        let b = vec![0u8; 101];
        assert_eq!(
            decode::<Bytes<8>>(&b, 100),
            Err(DecodeError::TooLarge { len: 101, max: 100 })
        );
    }

    #[test]
    fn a_length_prefix_larger_than_the_input_is_malformed() {
        // varint length 2^32 followed by nothing.
        let b = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(decode::<Bytes<8>>(&b, 100), Err(DecodeError::Malformed));
    }
}
