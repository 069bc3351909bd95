//! OPAQUE login.

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use rand::{CryptoRng, RngCore};

use curve25519_dalek::{RistrettoPoint, Scalar};
use zeroize::Zeroizing;

use super::HandshakeError;
use crate::{
    codec::Bytes,
    envelope::OpaqueBytes,
    names::UserName,
    seal::MasterKey,
    secret::SecretBytes,
    session::SessionKeys,
    suite::{KsfParams, LOGIN_CONTEXT, Suite, identifiers},
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

fn server_params(user: &UserName) -> ServerLoginParameters<'_, '_> {
    ServerLoginParameters {
        context: Some(LOGIN_CONTEXT),
        identifiers: identifiers(user),
    }
}

/// The client between `LoginStart` and `LoginFinish`.
pub struct LoginFlow {
    state: ClientLogin<Suite>,
    user: UserName,
}

impl std::fmt::Debug for LoginFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginFlow")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What the client has after a successful login.
#[derive(Debug)]
pub struct LoginFinished {
    /// OPAQUE `CredentialFinalization`, for `LoginFinish`.
    pub message: OpaqueBytes,
    /// The session's id and keys.
    pub session: SessionKeys,
    /// The master key, which opens the sealed storage key.
    pub master_key: MasterKey,
    /// The server's long-term public key, which OPAQUE authenticated: the same for every
    /// instance of a fleet, so it names the server a client remembers things about.
    pub server_key: [u8; 32],
}

/// Client, step 1 (KE1).
pub fn start<R: RngCore + CryptoRng>(
    rng: &mut R,
    user: &UserName,
    password: &SecretBytes,
) -> Result<(LoginFlow, OpaqueBytes), HandshakeError> {
    let r = ClientLogin::<Suite>::start(rng, password.expose_secret())?;
    let msg = bytes(&r.message.serialize())?;
    Ok((
        LoginFlow {
            state: r.state,
            user: user.clone(),
        },
        msg,
    ))
}

impl LoginFlow {
    /// Client, step 2 (KE3): runs the key-stretching function and authenticates the server.
    /// A wrong password (or an unknown user) fails here, before anything more is sent.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        password: &SecretBytes,
        response: &[u8],
        ksf: KsfParams,
    ) -> Result<LoginFinished, HandshakeError> {
        let response = CredentialResponse::<Suite>::deserialize(response).map_err(peer)?;
        let argon = ksf.argon2().map_err(|_| HandshakeError::BadKsfParams)?;
        let params = ClientLoginFinishParameters::new(
            Some(LOGIN_CONTEXT),
            identifiers(&self.user),
            Some(&argon),
        );
        let r = self
            .state
            .finish(rng, password.expose_secret(), response, params)?;
        let session_key = Zeroizing::new(r.session_key.to_vec());
        let export_key = Zeroizing::new(r.export_key.to_vec());
        let server_key = r
            .server_s_pk
            .serialize()
            .as_slice()
            .try_into()
            .map_err(|_| HandshakeError::Internal)?;
        Ok(LoginFinished {
            message: bytes(&r.message.serialize())?,
            session: SessionKeys::derive(&session_key),
            master_key: MasterKey::derive(&export_key),
            server_key,
        })
    }
}

/// The server between `LoginStart` and `LoginFinish`: zeroized on drop by opaque-ke.
pub struct ServerLoginState {
    state: ServerLogin<Suite>,
}

impl std::fmt::Debug for ServerLoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerLoginState(REDACTED)")
    }
}

/// HMAC label of fake records.
const FAKE_RECORD_LABEL: &[u8] = b"keyserver/1 fake record";

/// A registration record for a user that does not exist, the same every time for the same
/// name and `seed` (a server secret), so that repeated logins for an unknown name behave
/// exactly like those for a real one. It has the shape of a real record (a valid public
/// key, a masking key, an envelope) and opens with no password.
pub fn fake_record(seed: &[u8; 32], user: &UserName) -> Result<Vec<u8>, HandshakeError> {
    use hmac::{Hmac, Mac};
    use rand::SeedableRng;
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(seed).map_err(|_| HandshakeError::Internal)?;
    mac.update(FAKE_RECORD_LABEL);
    mac.update(user.as_str().as_bytes());
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(mac.finalize().into_bytes().into());
    let mut sk = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(sk.as_mut());
    // Below 2^252, so a canonical ristretto255 scalar. The public key is the one opaque-ke
    // derives (`PrivateKey::public_key`), computed with the basepoint table: every login
    // start computes a fake record, so its cost is paid by every login.
    sk[31] &= 0x0f;
    let scalar = Zeroizing::new(
        Option::<Scalar>::from(Scalar::from_canonical_bytes(*sk))
            .ok_or(HandshakeError::Internal)?,
    );
    if *scalar == Scalar::ZERO {
        return Err(HandshakeError::Internal);
    }
    let mut record = RistrettoPoint::mul_base(&scalar)
        .compress()
        .to_bytes()
        .to_vec();
    let mut rest = [0u8; 64 + 32 + 64]; // masking key, envelope nonce, envelope tag
    rng.fill_bytes(&mut rest);
    record.extend_from_slice(&rest);
    Ok(record)
}

/// Parses KE1 alone: a server counts a guess only for a well-formed login start, so junk
/// cannot lock an account.
pub fn parse_request(request: &[u8]) -> Result<(), HandshakeError> {
    CredentialRequest::<Suite>::deserialize(request).map_err(peer)?;
    Ok(())
}

/// Server, step 1 (KE2). `record` is the stored registration and `credential_id` the one it
/// was registered under; for a user that does not exist, a fake record and a fake
/// identifier, stable per name (see [`fake_record`]), so the reply is indistinguishable.
pub fn respond<R: RngCore + CryptoRng>(
    rng: &mut R,
    setup: &ServerSetup<Suite>,
    record: Option<&[u8]>,
    credential_id: &[u8],
    user: &UserName,
    request: &[u8],
) -> Result<(ServerLoginState, OpaqueBytes), HandshakeError> {
    let request = CredentialRequest::<Suite>::deserialize(request).map_err(peer)?;
    // A stored record that does not parse is the server's problem, not the client's.
    let record = record
        .map(ServerRegistration::<Suite>::deserialize)
        .transpose()
        .map_err(|_| HandshakeError::Internal)?;
    let r = ServerLogin::start(
        rng,
        setup,
        record,
        request,
        credential_id,
        server_params(user),
    )?;
    Ok((
        ServerLoginState { state: r.state },
        bytes(&r.message.serialize())?,
    ))
}

impl ServerLoginState {
    /// Server, step 2: checks KE3 and yields the session keys.
    pub fn finish(self, user: &UserName, message: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let message = CredentialFinalization::<Suite>::deserialize(message).map_err(peer)?;
        let r = self
            .state
            .finish(message, server_params(user))
            .map_err(|e| match HandshakeError::from(e) {
                // Any failure of KE3 is a failed authentication.
                HandshakeError::Malformed | HandshakeError::AuthFailed => {
                    HandshakeError::AuthFailed
                }
                other => other,
            })?;
        let session_key = Zeroizing::new(r.session_key.to_vec());
        Ok(SessionKeys::derive(&session_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::registration;
    use rand::{SeedableRng, rngs::StdRng};

    const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

    fn register(
        rng: &mut StdRng,
        setup: &ServerSetup<Suite>,
        user: &UserName,
        pw: &SecretBytes,
    ) -> (Vec<u8>, MasterKey) {
        let (flow, req) = registration::start(rng, user, pw).unwrap();
        let resp = registration::respond(setup, user.as_str().as_bytes(), req.as_slice()).unwrap();
        let fin = flow.finish(rng, pw, resp.as_slice(), KSF).unwrap();
        (
            registration::record(fin.upload.as_slice()).unwrap(),
            fin.master_key,
        )
    }

    fn login(
        rng: &mut StdRng,
        setup: &ServerSetup<Suite>,
        record: Option<&[u8]>,
        user: &UserName,
        pw: &SecretBytes,
    ) -> Result<(LoginFinished, SessionKeys), HandshakeError> {
        let (flow, ke1) = start(rng, user, pw)?;
        let (state, ke2) = respond(
            rng,
            setup,
            record,
            user.as_str().as_bytes(),
            user,
            ke1.as_slice(),
        )?;
        let fin = flow.finish(rng, pw, ke2.as_slice(), KSF)?;
        let keys = state.finish(user, fin.message.as_slice())?;
        Ok((fin, keys))
    }

    #[test]
    fn register_then_login_agree_on_session_keys_and_master_key() {
        let mut rng = StdRng::seed_from_u64(1);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let alice = UserName::new("alice").unwrap();
        let pw = SecretBytes::new(b"correct horse".to_vec());
        let (record, mk) = register(&mut rng, &setup, &alice, &pw);
        let (fin, server_keys) = login(&mut rng, &setup, Some(&record), &alice, &pw).unwrap();
        assert_eq!(fin.session.id, server_keys.id);
        assert_eq!(
            fin.session.c2s.expose_secret(),
            server_keys.c2s.expose_secret()
        );
        // Same password, same master key: the sealed storage key opens after login.
        let sk = crate::seal::StorageKey::generate(&mut rng);
        let sealed = mk.seal_storage_key(&mut rng, &alice, 1, &sk);
        assert!(fin.master_key.open_storage_key(&alice, 1, &sealed).is_ok());
    }

    #[test]
    fn a_wrong_password_fails_at_the_client_with_auth_failed() {
        let mut rng = StdRng::seed_from_u64(2);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let alice = UserName::new("alice").unwrap();
        let (record, _) = register(
            &mut rng,
            &setup,
            &alice,
            &SecretBytes::new(b"right".to_vec()),
        );
        let err = login(
            &mut rng,
            &setup,
            Some(&record),
            &alice,
            &SecretBytes::new(b"wrong".to_vec()),
        )
        .unwrap_err();
        assert_eq!(err, HandshakeError::AuthFailed);
    }

    #[test]
    fn an_unknown_user_fails_exactly_like_a_wrong_password_and_replies_are_the_same_size() {
        let mut rng = StdRng::seed_from_u64(3);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let alice = UserName::new("alice").unwrap();
        let pw = SecretBytes::new(b"pw".to_vec());
        let (record, _) = register(&mut rng, &setup, &alice, &pw);
        let nobody = UserName::new("nobody").unwrap();
        assert_eq!(
            login(&mut rng, &setup, None, &nobody, &pw).unwrap_err(),
            HandshakeError::AuthFailed
        );
        let (_, ke1) = start(&mut rng, &alice, &pw).unwrap();
        let (_, real) = respond(
            &mut rng,
            &setup,
            Some(&record),
            b"alice",
            &alice,
            ke1.as_slice(),
        )
        .unwrap();
        let (_, fake) =
            respond(&mut rng, &setup, None, b"nobody", &nobody, ke1.as_slice()).unwrap();
        assert_eq!(real.len(), fake.len());
    }

    #[test]
    fn a_fake_record_is_stable_per_name_has_a_real_records_size_and_never_logs_in() {
        let mut rng = StdRng::seed_from_u64(6);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let nobody = UserName::new("nobody").unwrap();
        let a = fake_record(&[1; 32], &nobody).unwrap();
        assert_eq!(a, fake_record(&[1; 32], &nobody).unwrap());
        assert_ne!(a, fake_record(&[2; 32], &nobody).unwrap());
        assert_ne!(
            a,
            fake_record(&[1; 32], &UserName::new("other").unwrap()).unwrap()
        );
        // A record opaque-ke parses, whose public key is the one opaque-ke derives from the
        // same scalar.
        ServerRegistration::<Suite>::deserialize(&a).unwrap();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[1; 32]).unwrap();
        mac.update(FAKE_RECORD_LABEL);
        mac.update(b"nobody");
        let mut seeded = rand_chacha::ChaCha20Rng::from_seed(mac.finalize().into_bytes().into());
        let mut sk = [0u8; 32];
        seeded.fill_bytes(&mut sk);
        sk[31] &= 0x0f;
        let sk =
            opaque_ke::keypair::PrivateKey::<opaque_ke::Ristretto255>::deserialize(&sk).unwrap();
        assert_eq!(a[..32], sk.public_key().serialize()[..]);
        let pw = SecretBytes::new(b"pw".to_vec());
        let (real, _) = register(&mut rng, &setup, &UserName::new("alice").unwrap(), &pw);
        assert_eq!(a.len(), real.len());
        assert_eq!(
            login(&mut rng, &setup, Some(&a), &nobody, &pw).unwrap_err(),
            HandshakeError::AuthFailed
        );
    }

    #[test]
    fn a_record_registered_under_one_name_does_not_log_in_as_another() {
        let mut rng = StdRng::seed_from_u64(4);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let alice = UserName::new("alice").unwrap();
        let mallory = UserName::new("mallory").unwrap();
        let pw = SecretBytes::new(b"pw".to_vec());
        let (record, _) = register(&mut rng, &setup, &alice, &pw);
        assert_eq!(
            login(&mut rng, &setup, Some(&record), &mallory, &pw).unwrap_err(),
            HandshakeError::AuthFailed
        );
    }

    #[test]
    fn garbage_opaque_messages_are_malformed_not_panics() {
        let mut rng = StdRng::seed_from_u64(5);
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let alice = UserName::new("alice").unwrap();
        for len in [0, 1, 31, 32, 95, 96, 97, 200] {
            let junk = vec![0xffu8; len];
            assert!(respond(&mut rng, &setup, None, b"alice", &alice, &junk).is_err());
            assert!(parse_request(&junk).is_err());
            assert!(registration::respond(&setup, b"alice", &junk).is_err());
            assert!(registration::record(&junk).is_err());
        }
    }
}
