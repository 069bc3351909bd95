//! `local-client attestation verify`: an AWS Nitro attestation document checked offline.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use keyserver_protocol::attestation::{self, Expectations, TrustedRoot};

use crate::{Cli, Failure, hex, rfc3339, usage};

/// Exit code when the server's identity could not be established.
pub(crate) const NOT_ATTESTED: u8 = 8;

#[derive(Debug, Subcommand)]
pub(crate) enum AttestationCmd {
    /// Verify an attestation document (COSE_Sign1, as the Nitro security module makes it)
    /// at a given time; print what it attests as JSON. Exit 8 names the check that failed.
    /// Uses the global --expect-pcrs, --attestation-root and --allow-debug-enclave.
    Verify {
        /// The document.
        #[arg(long)]
        document: PathBuf,
        /// Verify at this time (Unix seconds) [default: now].
        #[arg(long)]
        at: Option<u64>,
        /// The TLS certificate (DER) the document must be bound to: its `user_data` must be
        /// exactly this certificate's SubjectPublicKeyInfo.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
    },
}

fn refused(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: NOT_ATTESTED,
        message: format!("the server's identity could not be established: {e}"),
    }
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| usage(format!("cannot read {what} {}: {e}", path.display())))?;
    if bytes.len() > attestation::MAX_DOCUMENT {
        return Err(refused(format!(
            "{what} {} is larger than {} bytes",
            path.display(),
            attestation::MAX_DOCUMENT
        )));
    }
    Ok(bytes)
}

pub(crate) fn run(
    cli: &Cli,
    command: &AttestationCmd,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let AttestationCmd::Verify {
        document,
        at,
        tls_cert,
    } = command;
    let doc = read(document, "the document")?;
    let root = cli
        .attestation_root
        .as_ref()
        .map(|p| local_client::attestation::read_root(p))
        .transpose()?;
    let pcrs = cli
        .expect_pcrs
        .as_ref()
        .map(|p| local_client::attestation::read_expected_pcrs(p))
        .transpose()?
        .unwrap_or_default();
    let tls_spki = match tls_cert {
        Some(p) => Some(attestation::spki_of(&read(p, "the TLS certificate")?).map_err(refused)?),
        None => None,
    };
    let now = match at {
        Some(t) => *t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let trusted = root.as_deref().map_or(TrustedRoot::AWS, TrustedRoot::Der);
    let verified = attestation::verify(&doc, trusted, now).map_err(refused)?;
    Expectations {
        pcrs,
        allow_debug: cli.allow_debug_enclave,
        nonce: None,
        tls_spki,
        max_age_secs: None,
    }
    .check(&verified, now)
    .map_err(refused)?;
    let pcrs: serde_json::Map<String, serde_json::Value> = verified
        .pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), hex(v).into()))
        .collect();
    let secs = i64::try_from(verified.timestamp_ms / 1000).unwrap_or(i64::MAX);
    let json = serde_json::json!({
        "module_id": verified.module_id,
        "timestamp_ms": verified.timestamp_ms,
        "timestamp": rfc3339(secs),
        "pcrs": pcrs,
        "user_data": verified.user_data.as_deref().map(hex),
        "nonce": verified.nonce.as_deref().map(hex),
        "public_key": verified.public_key.as_deref().map(hex),
    });
    writeln!(out, "{json}").context("cannot write to stdout")?;
    Ok(())
}
