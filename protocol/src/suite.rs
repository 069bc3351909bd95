//! The OPAQUE cipher suite and the parameters both sides must agree on.

use opaque_ke::{Identifiers, Ristretto255, TripleDh};

/// OPAQUE with ristretto255 for the OPRF and the key exchange, triple-DH with SHA-512, and
/// argon2id as the key-stretching function (RFC 9807, section 7).
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

/// The server's identity in every OPAQUE transcript. Changing it invalidates every
/// registration, so it is a protocol constant rather than configuration.
pub const SERVER_IDENTITY: &[u8] = b"keyserver/1";

/// OPAQUE's context string: binds login transcripts to this protocol and version.
pub const LOGIN_CONTEXT: &[u8] = b"keyserver/1 login";

/// The identifiers used in registration and login: the user name and [`SERVER_IDENTITY`].
/// Binding the user name means a registration record cannot be replayed under another name.
pub fn identifiers(user: &crate::names::UserName) -> Identifiers<'_> {
    Identifiers {
        client: Some(user.as_str().as_bytes()),
        server: Some(SERVER_IDENTITY),
    }
}

/// Parameters of the key-stretching function (argon2id) the client runs on the password.
///
/// The server never runs it, so these are a property of the client; but a login must use
/// the parameters of the registration, or it fails exactly like a wrong password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KsfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KsfParams {
    /// RFC 9106, section 4, second recommended option: argon2id, 64 MiB, 3 passes, 4 lanes.
    /// About 140 ms on one core here: cheap once per login, costly per offline guess.
    pub const RFC9106_SECOND: Self = Self {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };

    /// Cheap parameters for tests of this crate only; never a default anywhere.
    pub const INSECURE_TEST_ONLY: Self = Self {
        m_cost: 8,
        t_cost: 1,
        p_cost: 1,
    };

    /// Builds the argon2id instance.
    pub fn argon2(self) -> Result<argon2::Argon2<'static>, argon2::Error> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, None)?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

impl Default for KsfParams {
    fn default() -> Self {
        Self::RFC9106_SECOND
    }
}
