//! The AWS Nitro Security Module: `/dev/nsm` inside a Nitro enclave, through AWS's own
//! driver crate (`aws-nitro-enclaves-nsm-api`). Outside an enclave the device does not
//! exist and [`Nsm::open`] says so; nothing here can be exercised on a machine without
//! Nitro, which is why the same verifier is run end to end against the simulated module and
//! against real AWS documents (`../shared/nitro-vectors`).

use std::sync::Mutex;

use aws_nitro_enclaves_nsm_api::{
    api::{Request, Response},
    driver,
};
use serde_bytes::ByteBuf;

use super::{AttestRequest, ModuleError, SecurityModule};

/// An open `/dev/nsm`.
#[derive(Debug)]
pub struct Nsm {
    /// The device's descriptor; one request at a time.
    fd: Mutex<i32>,
}

impl Nsm {
    /// Opens `/dev/nsm`.
    pub fn open() -> Result<Self, ModuleError> {
        if !std::path::Path::new("/dev/nsm").exists() {
            return Err(ModuleError::Unavailable(
                "/dev/nsm does not exist: this is not a Nitro enclave (use --attestation \
                 simulated for development)"
                    .into(),
            ));
        }
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(ModuleError::Unavailable("cannot open /dev/nsm".into()));
        }
        Ok(Self { fd: Mutex::new(fd) })
    }
}

impl SecurityModule for Nsm {
    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, ModuleError> {
        let buf = |b: Option<&[u8]>| b.map(|b| ByteBuf::from(b.to_vec()));
        let fd = self
            .fd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match driver::nsm_process_request(
            *fd,
            Request::Attestation {
                user_data: buf(request.user_data),
                nonce: buf(request.nonce),
                public_key: buf(request.public_key),
            },
        ) {
            Response::Attestation { document } => Ok(document),
            Response::Error(code) => Err(ModuleError::Failed(format!("{code:?}"))),
            _ => Err(ModuleError::Failed(
                "an answer that is not a document".into(),
            )),
        }
    }
}

impl Drop for Nsm {
    fn drop(&mut self) {
        let fd = *self
            .fd
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        driver::nsm_exit(fd);
    }
}
