//! OPAQUE registration (also used, inside a session, to change the password).

use opaque_ke::{
    ClientRegistration, ClientRegistrationFinishParameters, RegistrationRequest,
    RegistrationResponse, RegistrationUpload, ServerRegistration, ServerSetup,
};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::HandshakeError;
use crate::{
    codec::Bytes,
    envelope::OpaqueBytes,
    names::UserName,
    seal::MasterKey,
    secret::SecretBytes,
    suite::{KsfParams, Suite, identifiers},
};

/// Bytes from the peer that are not the OPAQUE message they should be. (opaque-ke reports
/// some of these as library errors, such as a point that is not on the curve: from the
/// peer's bytes, they are all malformed input, never the server's fault.)
fn peer(_: opaque_ke::errors::ProtocolError) -> HandshakeError {
    HandshakeError::Malformed
}

fn bytes(b: &[u8]) -> Result<OpaqueBytes, HandshakeError> {
    Bytes::new(b.to_vec()).ok_or(HandshakeError::Internal)
}

/// The client between `RegisterStart` and `RegisterFinish`.
pub struct RegistrationFlow {
    state: ClientRegistration<Suite>,
    user: UserName,
}

impl std::fmt::Debug for RegistrationFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationFlow")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What the client has once registration's second step is computed.
#[derive(Debug)]
pub struct RegistrationFinished {
    /// OPAQUE `RegistrationUpload`, for `RegisterFinish`.
    pub upload: OpaqueBytes,
    /// The master key derived from the new password's export key.
    pub master_key: MasterKey,
}

/// Client, step 1: blinds the password.
pub fn start<R: RngCore + CryptoRng>(
    rng: &mut R,
    user: &UserName,
    password: &SecretBytes,
) -> Result<(RegistrationFlow, OpaqueBytes), HandshakeError> {
    let r = ClientRegistration::<Suite>::start(rng, password.expose_secret())?;
    let msg = bytes(&r.message.serialize())?;
    Ok((
        RegistrationFlow {
            state: r.state,
            user: user.clone(),
        },
        msg,
    ))
}

impl RegistrationFlow {
    /// Client, step 2: runs the key-stretching function and makes the record to upload.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        password: &SecretBytes,
        response: &[u8],
        ksf: KsfParams,
    ) -> Result<RegistrationFinished, HandshakeError> {
        let response = RegistrationResponse::<Suite>::deserialize(response).map_err(peer)?;
        let argon = ksf.argon2().map_err(|_| HandshakeError::BadKsfParams)?;
        let params = ClientRegistrationFinishParameters::new(identifiers(&self.user), Some(&argon));
        let r = self
            .state
            .finish(rng, password.expose_secret(), response, params)?;
        let export_key = Zeroizing::new(r.export_key.to_vec());
        Ok(RegistrationFinished {
            upload: bytes(&r.message.serialize())?,
            master_key: MasterKey::derive(&export_key),
        })
    }
}

/// Server, step 1: evaluates the OPRF on the blinded password, under the key of
/// `credential_id`. Stateless: the server keeps only which user and credential identifier
/// the handshake stands for.
///
/// The credential identifier fixes the OPRF key the account will log in with. It must be
/// chosen at random for each registration (and each password change), never derived from
/// the user name: otherwise anyone could evaluate the OPRF under the key a name will use,
/// before it is registered, with no guess counted (see `spec/protocol.md`, section 4).
pub fn respond(
    setup: &ServerSetup<Suite>,
    credential_id: &[u8],
    request: &[u8],
) -> Result<OpaqueBytes, HandshakeError> {
    let request = RegistrationRequest::<Suite>::deserialize(request).map_err(peer)?;
    let r = ServerRegistration::<Suite>::start(setup, request, credential_id)?;
    bytes(&r.message.serialize())
}

/// Server, step 2: checks the uploaded record parses and returns the bytes to store.
pub fn record(upload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let upload = RegistrationUpload::<Suite>::deserialize(upload).map_err(peer)?;
    Ok(ServerRegistration::<Suite>::finish(upload)
        .serialize()
        .to_vec())
}
