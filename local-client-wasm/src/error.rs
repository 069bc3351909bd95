//! Errors as JavaScript sees them: an `Error` named `KeyserverError` whose `code` says what
//! the caller can do, with the meaning (and number, `exitCode`) of the command line's exit
//! codes, so a page and a script treat failures alike.
//!
//! | `code` | `exitCode` | meaning |
//! | --- | ---: | --- |
//! | `INVALID_INPUT` | 2 | a bad name, URL or argument: nothing was sent |
//! | `AUTH_FAILED` | 3 | wrong password or unknown user; `guessesLeft` when known |
//! | `NOT_FOUND` | 4 | no such secret or key |
//! | `LOCKED` | 5 | too many wrong passwords; `retryAfterSecs` when known |
//! | `UNREACHABLE` | 6 | no connection (or the certificate was refused by the browser) |
//! | `NAME_EXISTS` | 7 | a secret or key of that name exists |
//! | `ROLLBACK` | 9 | the server went back on what this client saw: contact its operator |
//! | `ERROR` | 1 | anything else (`reason` says which: `SESSION_ENDED`, `INTEGRITY`, …) |

use js_sys::{Error, Reflect};
use local_client::ClientError;
use wasm_bindgen::JsValue;

/// `e` as a `KeyserverError`.
pub(crate) fn to_js(e: ClientError) -> JsValue {
    let (code, exit, reason) = match &e {
        ClientError::InvalidInput(_) => ("INVALID_INPUT", 2, None),
        ClientError::AuthFailed { .. } => ("AUTH_FAILED", 3, None),
        ClientError::NotFound => ("NOT_FOUND", 4, None),
        ClientError::Locked { .. } => ("LOCKED", 5, None),
        ClientError::Unreachable(_) | ClientError::Tls(_) => ("UNREACHABLE", 6, None),
        ClientError::NameExists => ("NAME_EXISTS", 7, None),
        ClientError::NotAttested(_) => ("NOT_ATTESTED", 8, None),
        ClientError::Rollback(_) => ("ROLLBACK", 9, None),
        ClientError::VersionMismatch { .. } => ("ERROR", 1, Some("VERSION_MISMATCH")),
        ClientError::UserExists => ("ERROR", 1, Some("USER_EXISTS")),
        ClientError::Integrity(_) => ("ERROR", 1, Some("INTEGRITY")),
        ClientError::SessionEnded => ("ERROR", 1, Some("SESSION_ENDED")),
        ClientError::State(_) => ("ERROR", 1, Some("STATE")),
        ClientError::Server(_) => ("ERROR", 1, Some("SERVER")),
        ClientError::Protocol(_) => ("ERROR", 1, Some("PROTOCOL")),
    };
    let err = Error::new(&e.to_string());
    err.set_name("KeyserverError");
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&err, &JsValue::from_str(k), &v);
    };
    set("code", code.into());
    set("exitCode", exit.into());
    if let Some(r) = reason {
        set("reason", r.into());
    }
    match e {
        ClientError::AuthFailed {
            guesses_left: Some(n),
        } => set("guessesLeft", JsValue::from_f64(n as f64)),
        ClientError::Locked {
            retry_after_secs: Some(s),
        } => set("retryAfterSecs", JsValue::from_f64(s as f64)),
        ClientError::Server(c) => set("serverCode", c.name().into()),
        _ => {}
    }
    err.into()
}
