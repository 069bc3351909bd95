//! `CiphertextForRecipient`: what KMS answers a request that carried a Nitro `Recipient`. It
//! is a CMS `EnvelopedData` (RFC 5652) in BER (indefinite lengths, content in chunks or
//! whole): one `KeyTransRecipientInfo` whose `encryptedKey` is the content key encrypted
//! with RSAES-OAEP (SHA-256, MGF1-SHA-256) to the public key the attestation document
//! carried, and the data key encrypted with AES-256-CBC under that content key.
//!
//! The BER reader here is the smallest that reads this structure and nothing else: bounded
//! input, depth and element count, every length checked against what is left; it takes
//! apart what KMS sends and refuses anything else (another algorithm, another recipient
//! form, more than one recipient). RSA-OAEP is the `rsa` crate's, AES-CBC the `aes` and
//! `cbc` crates'. About `rsa`'s timing (RUSTSEC-2023-0071): the only ciphertexts this code
//! ever decrypts come from KMS over a TLS connection that ends inside the enclave, so no
//! one outside can ask it to decrypt a ciphertext of their choice, which the attack needs.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use rsa::{Oaep, RsaPrivateKey};
use zeroize::Zeroizing;

/// Largest `CiphertextForRecipient` read.
pub const MAX_INPUT: usize = 16 * 1024;
const MAX_DEPTH: usize = 12;
const MAX_ELEMENTS: usize = 256;

/// `id-envelopedData`, 1.2.840.113549.1.7.3.
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// `id-data`, 1.2.840.113549.1.7.1.
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// `id-RSAES-OAEP`, 1.2.840.113549.1.1.7.
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// `id-mgf1`, 1.2.840.113549.1.1.8.
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// `id-sha256`, 2.16.840.1.101.3.4.2.1.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// `id-aes256-CBC`, 2.16.840.1.101.3.4.1.42.
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// Why a `CiphertextForRecipient` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmsError {
    /// Not BER, or not the structure KMS sends.
    #[error("CiphertextForRecipient is malformed: {0}")]
    Malformed(&'static str),
    /// Another algorithm than RSAES-OAEP-SHA-256 and AES-256-CBC.
    #[error("CiphertextForRecipient uses an algorithm this server does not accept: {0}")]
    Algorithm(&'static str),
    /// It does not decrypt with this key.
    #[error("CiphertextForRecipient does not decrypt with this enclave's key")]
    Decrypt,
}

/// The parts of a `CiphertextForRecipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The recipient's subject key identifier.
    pub key_id: Vec<u8>,
    /// The content key, RSA-OAEP-encrypted.
    pub encrypted_key: Vec<u8>,
    /// The AES-CBC IV.
    pub iv: [u8; 16],
    /// The encrypted content (the data key, padded).
    pub ciphertext: Vec<u8>,
}

/// One BER element: its tag byte and, for a primitive one, its content; for a constructed
/// one, its children.
#[derive(Debug)]
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    children: Vec<Self>,
}

const CONSTRUCTED: u8 = 0x20;

struct Reader {
    elements: usize,
}

impl Reader {
    /// Reads the elements of `input` until its end (or, inside an indefinite-length
    /// element, until end-of-contents); returns them and how many bytes they took.
    fn read_all<'a>(
        &mut self,
        input: &'a [u8],
        depth: usize,
        until_eoc: bool,
    ) -> Result<(Vec<Element<'a>>, usize), CmsError> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            if pos == input.len() {
                if until_eoc {
                    return Err(CmsError::Malformed("an indefinite length has no end"));
                }
                return Ok((out, pos));
            }
            if until_eoc && input[pos..].starts_with(&[0, 0]) {
                return Ok((out, pos + 2));
            }
            let (e, used) = self.read_one(&input[pos..], depth)?;
            out.push(e);
            pos += used;
        }
    }

    fn read_one<'a>(
        &mut self,
        input: &'a [u8],
        depth: usize,
    ) -> Result<(Element<'a>, usize), CmsError> {
        if depth > MAX_DEPTH {
            return Err(CmsError::Malformed("nested too deep"));
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(CmsError::Malformed("too many elements"));
        }
        let short = CmsError::Malformed("an element runs past the end");
        let tag = *input.first().ok_or(short.clone())?;
        if tag & 0x1f == 0x1f {
            return Err(CmsError::Malformed("a multi-byte tag"));
        }
        let first = *input.get(1).ok_or(short.clone())?;
        let mut pos = 2;
        if first == 0x80 {
            if tag & CONSTRUCTED == 0 {
                return Err(CmsError::Malformed("an indefinite length on a primitive"));
            }
            let (children, used) = self.read_all(&input[pos..], depth + 1, true)?;
            return Ok((
                Element {
                    tag,
                    content: &[],
                    children,
                },
                pos + used,
            ));
        }
        let len = if first & 0x80 == 0 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(CmsError::Malformed("a length of more than four bytes"));
            }
            let bytes = input.get(pos..pos + n).ok_or(short.clone())?;
            pos += n;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let content = input
            .get(pos..pos.checked_add(len).ok_or(short.clone())?)
            .ok_or(short)?;
        let children = if tag & CONSTRUCTED != 0 {
            let (c, _) = self.read_all(content, depth + 1, false)?;
            c
        } else {
            Vec::new()
        };
        Ok((
            Element {
                tag,
                content,
                children,
            },
            pos + len,
        ))
    }
}

impl<'a> Element<'a> {
    fn child(&self, i: usize, tag: u8, what: &'static str) -> Result<&Self, CmsError> {
        self.children
            .get(i)
            .filter(|c| c.tag == tag)
            .ok_or(CmsError::Malformed(what))
    }

    /// The bytes of an OCTET STRING (or an implicitly tagged one), whole or in chunks.
    fn octets(&self, what: &'static str) -> Result<Vec<u8>, CmsError> {
        if self.tag & CONSTRUCTED == 0 {
            return Ok(self.content.to_vec());
        }
        let mut out = Vec::new();
        for c in &self.children {
            if c.tag != 0x04 {
                return Err(CmsError::Malformed(what));
            }
            out.extend_from_slice(&c.octets(what)?);
        }
        Ok(out)
    }

    fn is_oid(&self, oid: &[u8]) -> bool {
        self.tag == 0x06 && self.content == oid
    }

    /// Whether this is `AlgorithmIdentifier { oid, NULL or nothing }`.
    fn is_algorithm(&self, oid: &[u8]) -> bool {
        self.tag == 0x30
            && match self.children.as_slice() {
                [o] => o.is_oid(oid),
                [o, p] => o.is_oid(oid) && p.tag == 0x05 && p.content.is_empty(),
                _ => false,
            }
    }

    /// Whether this is `AlgorithmIdentifier { id-mgf1, AlgorithmIdentifier { sha256 } }`.
    fn is_mgf1_sha256(&self) -> bool {
        self.tag == 0x30
            && matches!(self.children.as_slice(), [o, h] if o.is_oid(OID_MGF1) && h.is_algorithm(OID_SHA256))
    }
}

/// `id-pSpecified`, 1.2.840.113549.1.1.9.
const OID_P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];

/// Whether `params` are `RSAES-OAEP-params` with SHA-256, MGF1-SHA-256 and an empty label.
fn is_oaep_sha256(params: &Element<'_>) -> bool {
    fn explicit<'e, 'a>(e: &'e Element<'a>, tag: u8) -> Option<&'e Element<'a>> {
        (e.tag == tag && e.children.len() == 1).then(|| &e.children[0])
    }
    let [hash, mgf, rest @ ..] = params.children.as_slice() else {
        return false;
    };
    let label_empty = match rest {
        [] => true,
        [p] => explicit(p, 0xa2).is_some_and(|a| {
            a.tag == 0x30
                && matches!(a.children.as_slice(), [o, l] if o.is_oid(OID_P_SPECIFIED) && l.tag == 0x04 && l.content.is_empty())
        }),
        _ => false,
    };
    params.tag == 0x30
        && explicit(hash, 0xa0).is_some_and(|h| h.is_algorithm(OID_SHA256))
        && explicit(mgf, 0xa1).is_some_and(Element::is_mgf1_sha256)
        && label_empty
}

/// Takes a `CiphertextForRecipient` apart.
pub fn parse(input: &[u8]) -> Result<Envelope, CmsError> {
    if input.len() > MAX_INPUT {
        return Err(CmsError::Malformed("too large"));
    }
    let mut reader = Reader { elements: 0 };
    let (top, used) = reader.read_one(input, 0)?;
    if used != input.len() {
        return Err(CmsError::Malformed("bytes after the content"));
    }
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
    if top.tag != 0x30
        || !top
            .child(0, 0x06, "no content type")?
            .is_oid(OID_ENVELOPED_DATA)
    {
        return Err(CmsError::Malformed("not an EnvelopedData"));
    }
    let enveloped = top
        .child(1, 0xa0, "no content")?
        .child(0, 0x30, "no EnvelopedData")?;
    // Version 2: a KeyTransRecipientInfo named by subject key identifier (RFC 5652 6.1).
    if enveloped.child(0, 0x02, "no version")?.content != [2] {
        return Err(CmsError::Malformed("an EnvelopedData version other than 2"));
    }
    // EnvelopedData ::= SEQUENCE { version, [0] originatorInfo OPTIONAL, recipientInfos,
    //                              encryptedContentInfo, [1] unprotectedAttrs OPTIONAL }
    let mut i = 1;
    if enveloped.children.get(i).is_some_and(|c| c.tag == 0xa0) {
        i += 1;
    }
    let recipients = enveloped.child(i, 0x31, "no recipient infos")?;
    let [recipient] = recipients.children.as_slice() else {
        return Err(CmsError::Malformed("not exactly one recipient"));
    };
    // KeyTransRecipientInfo ::= SEQUENCE { version, rid [0] subjectKeyIdentifier,
    //                                      keyEncryptionAlgorithm, encryptedKey }
    if recipient.tag != 0x30 || recipient.child(0, 0x02, "no version")?.content != [2] {
        return Err(CmsError::Malformed(
            "not a KeyTransRecipientInfo of version 2",
        ));
    }
    let key_id = recipient
        .child(
            1,
            0x80,
            "the recipient is not named by a subject key identifier",
        )?
        .octets("a bad subject key identifier")?;
    let algorithm = recipient.child(2, 0x30, "no key encryption algorithm")?;
    if !algorithm
        .child(0, 0x06, "no key encryption algorithm")?
        .is_oid(OID_RSAES_OAEP)
    {
        return Err(CmsError::Algorithm(
            "the key is not encrypted with RSAES-OAEP",
        ));
    }
    let params = algorithm.child(1, 0x30, "no RSAES-OAEP parameters")?;
    if algorithm.children.len() != 2 || !is_oaep_sha256(params) {
        return Err(CmsError::Algorithm(
            "RSAES-OAEP without SHA-256 and MGF1-SHA-256",
        ));
    }
    let encrypted_key = recipient
        .child(3, 0x04, "no encrypted key")?
        .octets("a bad encrypted key")?;
    // EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    //                                     [0] IMPLICIT encryptedContent }
    let content = enveloped.child(i + 1, 0x30, "no encrypted content info")?;
    if !content.child(0, 0x06, "no content type")?.is_oid(OID_DATA) {
        return Err(CmsError::Malformed("the encrypted content is not data"));
    }
    let cipher = content.child(1, 0x30, "no content encryption algorithm")?;
    if !cipher
        .child(0, 0x06, "no content encryption algorithm")?
        .is_oid(OID_AES256_CBC)
    {
        return Err(CmsError::Algorithm(
            "the content is not encrypted with AES-256-CBC",
        ));
    }
    let iv: [u8; 16] = cipher
        .child(1, 0x04, "no IV")?
        .octets("a bad IV")?
        .try_into()
        .map_err(|_| CmsError::Malformed("an IV that is not 16 bytes"))?;
    let ciphertext = content
        .children
        .get(2)
        .filter(|c| c.tag & !CONSTRUCTED == 0x80)
        .ok_or(CmsError::Malformed("no encrypted content"))?
        .octets("bad encrypted content")?;
    Ok(Envelope {
        key_id,
        encrypted_key,
        iv,
        ciphertext,
    })
}

/// Decrypts a `CiphertextForRecipient` with the enclave's RSA key: the data key.
pub fn decrypt(input: &[u8], key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, CmsError> {
    let e = parse(input)?;
    let content_key = Zeroizing::new(
        key.decrypt(Oaep::new::<sha2::Sha256>(), &e.encrypted_key)
            .map_err(|_| CmsError::Decrypt)?,
    );
    let cipher = cbc::Decryptor::<aes::Aes256>::new_from_slices(&content_key, &e.iv)
        .map_err(|_| CmsError::Decrypt)?;
    let mut buf = Zeroizing::new(e.ciphertext);
    let n = cipher
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| CmsError::Decrypt)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_and_truncations_are_refused_without_panics() {
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x04, 0x80, 0, 0],
            &[0x1f, 0x01],
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
        // Deep nesting is bounded.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(parse(&deep).is_err());
        assert!(parse(&vec![0u8; MAX_INPUT + 1]).is_err());
    }
}
