//! `retrieve`: the current version of a secret, opened here.

use keyserver_protocol::{OpRequest, OpResponse, SecretBytes, SecretName, ops::Retrieve};

use crate::{ClientError, Session};

impl Session {
    /// Retrieves and opens the current version of `name`; returns it and its version.
    ///
    /// Errors: [`ClientError::NotFound`] (no such secret); [`ClientError::Integrity`] if
    /// the server's ciphertext was altered, swapped or relabelled, and
    /// [`ClientError::Rollback`] if it is older than a version this client stored or saw
    /// (nothing is returned: contact the operator); [`ClientError::SessionEnded`] (log in
    /// again); transport errors (retry).
    ///
    /// The version is checked against the newest this client knows of; another device may
    /// have stored a newer one since, which [`Session::check_recent_events`] learns from
    /// the audit chain (and then refuses this one): call it before using the secret.
    pub async fn retrieve(&self, name: &SecretName) -> Result<(SecretBytes, u64), ClientError> {
        let tag = self.tag(name);
        let op = OpRequest::Retrieve(Retrieve { tag });
        let at_send = self.newest_known(name, &tag);
        let (OpResponse::Secret(s), at) = self.call_recorded(&op, "retrieve").await? else {
            return Err(ClientError::Protocol("unexpected reply to Retrieve"));
        };
        // Not older than a version this client stored or saw: an older one put back would
        // open (it was sealed for its own version), so only this check catches it.
        self.saw_version(name, &tag, at_send, s.version, at)?;
        let secret = self
            .keys()
            .storage_key
            .open_secret(&self.user, name, s.version, s.sealed.as_slice())
            .map_err(|_| {
                ClientError::Integrity(
                    "the stored secret was altered, swapped or is not the version claimed",
                )
            })?;
        Ok((secret, s.version))
    }
}
