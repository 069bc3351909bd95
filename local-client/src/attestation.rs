//! What a client is told to expect of an attested server: the PCRs (`--expect-pcrs`) and the
//! root its attestation chains to (`--attestation-root`), read from files with a bound.
//! The verification itself is `keyserver_protocol::attestation`.

use std::{collections::BTreeMap, io::Read, path::Path};

use crate::ClientError;

/// Largest PCR or root file read.
const MAX_FILE: u64 = 64 * 1024;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| {
            ClientError::InvalidInput(format!("cannot read {what} {}: {e}", path.display()))
        })?;
    if buf.len() as u64 > MAX_FILE {
        return Err(ClientError::InvalidInput(format!(
            "{what} {} is larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// The PCRs a server must attest, from a JSON object `{"0": "hex", "1": "hex", "2": "hex"}`
/// (and optionally `"8"`): each 48 bytes (SHA-384), as `nitro-cli describe-eif` prints them.
pub fn read_expected_pcrs(path: &Path) -> Result<BTreeMap<u8, Vec<u8>>, ClientError> {
    let bad = |why: String| {
        ClientError::InvalidInput(format!("the PCR file {} is invalid: {why}", path.display()))
    };
    let text = read(path, "the PCR file")?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut pcrs = BTreeMap::new();
    for (k, v) in map {
        let index = match k.as_str() {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            "8" => 8,
            other => return Err(bad(format!("PCR {other:?} (only 0, 1, 2 and 8)"))),
        };
        let value = hex::decode(v.trim()).map_err(|_| bad(format!("PCR{index} is not hex")))?;
        if value.len() != 48 {
            return Err(bad(format!("PCR{index} is not 48 bytes")));
        }
        pcrs.insert(index, value);
    }
    for required in [0, 1, 2] {
        if !pcrs.contains_key(&required) {
            return Err(bad(format!("PCR{required} is missing")));
        }
    }
    Ok(pcrs)
}

/// A root certificate from a PEM (or DER) file.
pub fn read_root(path: &Path) -> Result<Vec<u8>, ClientError> {
    let bytes = read(path, "the attestation root")?;
    if !bytes.starts_with(b"-----") {
        return Ok(bytes);
    }
    let mut reader = bytes.as_slice();
    match rustls_pemfile::certs(&mut reader).next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        _ => Err(ClientError::InvalidInput(format!(
            "the attestation root {} holds no certificate",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcr_file_names_pcr0_1_2_and_maybe_8_each_48_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pcrs.json");
        let h = "ab".repeat(48);
        std::fs::write(
            &f,
            format!(r#"{{"0":"{h}","1":"{h}","2":"{h}","8":"{h}"}}"#),
        )
        .unwrap();
        assert_eq!(read_expected_pcrs(&f).unwrap().len(), 4);
        for bad in [
            format!(r#"{{"0":"{h}","1":"{h}"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"abcd"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"{h}","3":"{h}"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"zz"}}"#),
            "[]".to_string(),
        ] {
            std::fs::write(&f, bad).unwrap();
            assert!(matches!(
                read_expected_pcrs(&f),
                Err(ClientError::InvalidInput(_))
            ));
        }
    }
}
