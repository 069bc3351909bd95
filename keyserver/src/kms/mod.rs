//! Key-management services: the AWS KMS client ([`client`]), the credentials it signs with
//! ([`credentials`]), and the CMS answers KMS gives an enclave ([`cms`]).

pub mod client;
pub mod cms;
pub mod credentials;
pub mod enclave;

pub use client::{Connector, Context, Endpoint, KmsClient, KmsError, Recipient, TcpConnector};
pub use credentials::{Credentials, CredentialsError};
