//! How many storage jobs of one account an instance runs at once.
//!
//! Every write job of an account locks the account's row, so its jobs run one at a time in
//! the database whatever the instance sends. On Postgres each job holds one of a small pool
//! of connections while it waits for that lock: one account with many requests in flight
//! (anyone can register one) would hold the whole pool waiting on itself, and every other
//! account's writes would time out. The gate keeps an account's extra jobs waiting here, in
//! memory, instead of in the pool. SQLite's single writer queues jobs without holding
//! anything, so there the backend asks for no gate (and keeps its group commit).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::storage::AccountId;

/// The gates of every account with jobs in flight on this instance.
#[derive(Debug)]
pub struct AccountGates {
    /// Jobs of one account at once; `None`: no gate.
    per_account: Option<usize>,
    map: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
}

/// Leave to run one job of an account; the next one waiting goes when it is dropped.
#[derive(Debug)]
pub struct Pass {
    held: Option<(OwnedSemaphorePermit, AccountId, Arc<AccountGates>)>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some((permit, account, gates)) = self.held.take() {
            let semaphore = permit.semaphore().clone();
            drop(permit);
            // The last one out removes the gate, so the map holds only accounts with jobs
            // in flight.
            let mut map = gates.lock();
            if Arc::strong_count(&semaphore) == 2 && semaphore.available_permits() > 0 {
                map.remove(&account);
            }
        }
    }
}

impl AccountGates {
    /// Gates letting `per_account` jobs of an account through at once (`None`: all).
    pub fn new(per_account: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            per_account: per_account.map(|n| n.max(1)),
            map: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Arc<Semaphore>>> {
        // Each critical section is one map operation: a panic cannot leave it half-done.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for leave to run a job of `account`.
    pub async fn enter(self: &Arc<Self>, account: AccountId) -> Pass {
        let Some(n) = self.per_account else {
            return Pass { held: None };
        };
        let semaphore = self
            .lock()
            .entry(account)
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone();
        match semaphore.acquire_owned().await {
            Ok(permit) => Pass {
                held: Some((permit, account, self.clone())),
            },
            // Never closed; without a permit the job runs ungated rather than not at all.
            Err(_) => Pass { held: None },
        }
    }

    /// Accounts with a gate now (jobs in flight or waiting).
    pub fn accounts(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_account_runs_at_most_its_share_and_others_are_not_held_up() {
        let gates = AccountGates::new(Some(2));
        let a1 = gates.enter(1).await;
        let a2 = gates.enter(1).await;
        // A third job of account 1 waits; account 2 goes at once.
        let third = tokio::spawn({
            let gates = gates.clone();
            async move { gates.enter(1).await }
        });
        let b = gates.enter(2).await;
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        drop(a1);
        let a3 = third.await.unwrap();
        drop((a2, a3, b));
        // Nobody in flight: nothing kept.
        assert_eq!(gates.accounts(), 0);
    }

    #[tokio::test]
    async fn without_a_gate_every_job_goes() {
        let gates = AccountGates::new(None);
        let passes: Vec<Pass> = futures_join(&gates, 100).await;
        assert_eq!(passes.len(), 100);
        assert_eq!(gates.accounts(), 0);
    }

    async fn futures_join(gates: &Arc<AccountGates>, n: usize) -> Vec<Pass> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(gates.enter(7).await);
        }
        out
    }
}
