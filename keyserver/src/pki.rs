//! The development PKI: a CA and a server certificate made with rcgen on first start.
//!
//! Good for a laptop and for tests. In production, put a certificate from your own CA in
//! `server.pem`/`server.key` and give clients that CA (`pki/README.md`).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{FileError, write_private, write_public};

/// The names the development server certificate is valid for.
pub const DEV_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Makes `ca.pem`, `server.pem` and `server.key` in `dir`; the CA's key is thrown away.
pub fn create_dev_pki(dir: &Path) -> Result<(), FileError> {
    let pki = |e: rcgen::Error| FileError::Pki(e.to_string());
    let ca_key = KeyPair::generate().map_err(pki)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "keyserver development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(pki)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate().map_err(pki)?;
    let mut params = CertificateParams::new(DEV_NAMES.map(String::from).to_vec()).map_err(pki)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "keyserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).map_err(pki)?;

    // The CA's private key is not kept: it signed the one certificate this data dir needs,
    // and kept beside it, it would let whoever copies the data dir sign a certificate for
    // any name that clients trusting `ca.pem` accept. (Its certificate is also limited to
    // signing end-entity certificates: path length 0.)
    drop(ca_key);
    write_public(&dir.join("ca.pem"), ca_cert.pem().as_bytes())?;
    write_private(&dir.join("server.key"), key.serialize_pem().as_bytes())?;
    write_public(&dir.join("server.pem"), cert.pem().as_bytes())?;
    Ok(())
}

/// Reads the server's certificate chain and key.
pub fn load_server_identity(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), FileError> {
    load_identity(&dir.join("server.pem"), &dir.join("server.key"))
}

/// A certificate chain and its private key from PEM files.
pub fn load_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), FileError> {
    let certs = rustls_pemfile::certs(&mut read_pem(cert_path)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FileError::Invalid(cert_path.display().to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(FileError::Invalid(
            cert_path.display().to_string(),
            "no certificate in file".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut read_pem(key_path)?.as_slice())
        .map_err(|e| FileError::Invalid(key_path.display().to_string(), e.to_string()))?
        .ok_or_else(|| {
            FileError::Invalid(
                key_path.display().to_string(),
                "no private key in file".into(),
            )
        })?;
    Ok((certs, key))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, FileError> {
    crate::files::read_bounded(path, 1024 * 1024)
}
