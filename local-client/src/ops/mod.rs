//! The operations of a [`crate::Session`], one module each, named as the operation (the same
//! names as in `keyserver_protocol::ops` and in the server). Each method's documentation
//! says which errors it returns and what the caller can do about them.

mod audit;
mod change_password;
mod checkpoint;
mod delete;
mod key_delete;
mod key_export;
mod key_generate;
mod key_import;
mod key_list;
mod key_public;
mod key_sign;
mod list;
mod logout;
mod reauth;
mod retrieve;
mod rotate_key;
mod store;

pub use audit::{AuditReport, PathCheck};
pub use list::Listed;
