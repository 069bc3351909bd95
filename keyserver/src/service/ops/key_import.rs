//! `key-import`: a private key the user brings, checked for its algorithm, then added as a
//! generated one is.

use keyserver_protocol::{audit_chain::EventKind, ops::KeyImport, signing::PrivateKey};

use super::{Answer, Call, key_generate::add};
use crate::service::ServerError;

/// Handles `key-import`.
pub(super) async fn handle(call: &Call<'_>, op: KeyImport) -> Result<Answer, ServerError> {
    let key = PrivateKey::from_bytes(op.algorithm, op.private_key.expose_secret())
        .map_err(|_| ServerError::Malformed)?;
    add(call, op.name, &key, op.exportable, EventKind::KeyImport).await
}
