//! What the client knows of each account, kept in a store the page chooses: IndexedDB by
//! default (`js/store.js`), or any object with `get(key)` and `put(key, value)` returning
//! Promises. The same JSON, merged the same way, as the command line's state files: the
//! newer of each thing known wins, and a state that would go back is refused. Each read,
//! merge and write of an account's state holds a Web Lock named after it, across the
//! origin's tabs and workers, as the command line holds a file lock: two tabs saving at
//! once cannot lose the newer position (which would let a server go back to it unseen).

use std::{cell::RefCell, rc::Rc};

use js_sys::{Function, Promise, Reflect};
use keyserver_protocol::UserName;
use local_client::{AccountState, ClientError, ServerId, state::state_name};
use wasm_bindgen::{JsCast, JsValue, closure::Closure, prelude::wasm_bindgen};
use wasm_bindgen_futures::JsFuture;

use crate::link::describe;

/// The largest state accepted from the store (a state holds positions and key versions).
const MAX_STATE: usize = 1 << 20;

#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    #[wasm_bindgen(js_name = indexedDbStore)]
    fn indexed_db_store(name: Option<String>) -> JsValue;
    #[wasm_bindgen(js_name = withLock)]
    fn with_lock(name: &str, f: &JsValue) -> Promise;
}

/// A page's store of account states.
#[derive(Clone, Debug)]
pub(crate) struct Store(JsValue);

fn state_err(what: &str, e: &JsValue) -> ClientError {
    ClientError::State(format!(
        "the page's store could not {what}: {}",
        describe(e)
    ))
}

impl Store {
    /// IndexedDB, in the database `name` (default `keyserver-client`).
    pub(crate) fn indexed_db(name: Option<String>) -> Self {
        Self(indexed_db_store(name))
    }

    /// The page's own store: an object with `get` and `put`.
    pub(crate) fn custom(store: JsValue) -> Result<Self, ClientError> {
        for method in ["get", "put"] {
            let f = Reflect::get(&store, &method.into()).unwrap_or(JsValue::UNDEFINED);
            if !f.is_function() {
                return Err(ClientError::InvalidInput(format!(
                    "the store has no {method} method"
                )));
            }
        }
        Ok(Self(store))
    }

    async fn call(&self, method: &str, args: &[JsValue]) -> Result<JsValue, ClientError> {
        let f: Function = Reflect::get(&self.0, &method.into())
            .map_err(|e| state_err(method, &e))?
            .unchecked_into();
        let r = match args {
            [a] => f.call1(&self.0, a),
            [a, b] => f.call2(&self.0, a, b),
            _ => f.call0(&self.0),
        }
        .map_err(|e| state_err(method, &e))?;
        JsFuture::from(Promise::resolve(&r))
            .await
            .map_err(|e| state_err(method, &e))
    }

    async fn load(
        &self,
        server: &ServerId,
        user: &UserName,
    ) -> Result<Option<AccountState>, ClientError> {
        let got = self.call("get", &[state_name(server, user).into()]).await?;
        if got.is_null() || got.is_undefined() {
            return Ok(None);
        }
        let text = got
            .as_string()
            .ok_or_else(|| ClientError::State("the store's get returned no string".into()))?;
        if text.len() > MAX_STATE {
            return Err(ClientError::State(format!(
                "the stored state is larger than {MAX_STATE} bytes"
            )));
        }
        AccountState::from_json(text.as_bytes(), user).map(Some)
    }

    /// The state of `user` on `server`: the stored one, or a new one, stored at once (so
    /// that every tab of the page shares its names' key).
    pub(crate) async fn open(
        &self,
        server: &ServerId,
        user: &UserName,
    ) -> Result<AccountState, ClientError> {
        self.locked(server, user, None).await
    }

    /// Stores `state`, merged with what is stored (another tab may have stored since).
    pub(crate) async fn save(
        &self,
        server: &ServerId,
        user: &UserName,
        state: &AccountState,
    ) -> Result<AccountState, ClientError> {
        self.locked(server, user, Some(state.clone())).await
    }

    /// Under the account's lock: what is stored, merged with `state` and stored (or, with
    /// no `state` and nothing stored, a new state stored).
    async fn locked(
        &self,
        server: &ServerId,
        user: &UserName,
        state: Option<AccountState>,
    ) -> Result<AccountState, ClientError> {
        let out: Rc<RefCell<Option<Result<AccountState, ClientError>>>> = Rc::default();
        let (store, server_id, user_name, result) =
            (self.clone(), *server, user.clone(), out.clone());
        let critical = Closure::once_into_js(move || -> Promise {
            wasm_bindgen_futures::future_to_promise(async move {
                let r = store.merge_and_put(&server_id, &user_name, state).await;
                *result.borrow_mut() = Some(r);
                Ok(JsValue::UNDEFINED)
            })
        });
        let name = format!("keyserver-state:{}", state_name(server, user));
        JsFuture::from(with_lock(&name, &critical))
            .await
            .map_err(|e| state_err("lock", &e))?;
        out.borrow_mut().take().unwrap_or_else(|| {
            Err(ClientError::State(
                "the state's lock was never granted".into(),
            ))
        })
    }

    async fn merge_and_put(
        &self,
        server: &ServerId,
        user: &UserName,
        state: Option<AccountState>,
    ) -> Result<AccountState, ClientError> {
        let merged = match (self.load(server, user).await?, state) {
            (Some(there), None) => return Ok(there),
            (Some(mut there), Some(ours)) => {
                there.merge(&ours).map_err(ClientError::Rollback)?;
                there
            }
            (None, ours) => ours.unwrap_or_default(),
        };
        self.call(
            "put",
            &[state_name(server, user).into(), merged.to_json(user).into()],
        )
        .await?;
        Ok(merged)
    }
}
