//! What the client needs from its runtime, natively (tokio) and in a browser (wasm32): a
//! timer for backoff, and somewhere to run the key-stretching function without stalling
//! other requests.

use std::time::Duration;

use crate::ClientError;

#[cfg(not(any(feature = "native", target_arch = "wasm32")))]
compile_error!("local-client needs its `native` feature, or the wasm32 target (a browser)");

/// Waits for `d`.
pub(crate) async fn sleep(d: Duration) {
    #[cfg(feature = "native")]
    tokio::time::sleep(d).await;
    #[cfg(all(not(feature = "native"), target_arch = "wasm32"))]
    gloo_timers::future::sleep(d).await;
}

/// Runs `f` (argon2: tens of milliseconds to seconds) off the async threads natively. A
/// browser has one thread per page or worker: there it runs in place, and the page keeps
/// its interface responsive by running the client in a worker.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ClientError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    #[cfg(feature = "native")]
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| ClientError::Protocol("the key-stretching task failed"))
    }
    #[cfg(not(feature = "native"))]
    {
        Ok(f())
    }
}
