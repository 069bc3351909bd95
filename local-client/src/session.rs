//! A logged-in session: sends sealed operations and opens their answers. Each operation is
//! a method in its own module under `ops/`, named as the operation.

use std::{collections::BTreeMap, sync::Arc};

use keyserver_protocol::{
    ErrorCode, KeyName, NameTag, OpRequest, OpResponse, Request, Response, SecretName, UserName,
    audit_chain::AuditPosition, ops::OpAnswer, seal::StorageKey, session::ClientChannel,
};

use crate::{
    ClientError, Connection,
    state::{AccountState, Rollback, ServerId},
};

/// How often a request refused as a replay is tried again (see [`Session::call`]).
const REPLAY_RETRIES: u32 = 6;

/// A logged-in session. Clone it freely: clones share the session and may run requests
/// concurrently from many tasks.
#[derive(Clone)]
pub struct Session {
    conn: Arc<std::sync::RwLock<Connection>>,
    pub(crate) user: UserName,
    channel: Arc<ClientChannel>,
    keys: Arc<std::sync::RwLock<AccountKeys>>,
    server: ServerId,
    checks: Arc<std::sync::Mutex<Checks>>,
}

/// What the session checks the server's answers against.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// What this client remembers of the account; its position is the newest one verified.
    pub(crate) state: AccountState,
    /// The verified position when the session started (from the state or a checkpoint).
    remembered: Option<AuditPosition>,
    /// The checkpoint the session started from, if it remembered nothing.
    checkpoint: Option<keyserver_protocol::ops::StoredCheckpoint>,
    /// Positions answered in this session past the verified one, by seq: the chain must
    /// pass through each (checked when it is read).
    seen: BTreeMap<u64, [u8; 32]>,
    /// The versions this session was given, by (tag, version), each with its name and the
    /// newest position of an answer that gave it: once the chain up to it is read, no
    /// store of a newer version may come before it (another device may have stored one
    /// that this client had not heard of).
    served: BTreeMap<(NameTag, u64), (SecretName, u64)>,
    /// The public keys of server-held keys this session was given (by the SHA-256 of each),
    /// with the newest position of an answer that gave it: each must be the one the
    /// verified chain records for its name (checked when the chain is read).
    served_keys: BTreeMap<(KeyName, [u8; 32]), u64>,
    /// Whether the server was caught going back: nothing of this session is then kept.
    caught: bool,
}

/// The most positions, and the most versions given, a session keeps to check against the
/// chain. Past it, answers are refused until the chain is checked
/// ([`Session::check_recent_events`]): nothing is left unchecked.
const MAX_UNCHECKED: usize = 1 << 18;

/// The error once [`MAX_UNCHECKED`] answers wait to be checked.
const TOO_MANY_UNCHECKED: ClientError = ClientError::Protocol(
    "this session holds as many answers as it keeps unchecked: check the audit chain \
     (check_recent_events) before going on",
);

impl Checks {
    fn new(state: AccountState) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }

    /// Notes that the server was caught going back.
    pub(crate) fn caught(&mut self, r: Rollback) -> ClientError {
        self.caught = true;
        ClientError::Rollback(r)
    }

    /// The newest position seen or verified.
    pub(crate) fn newest(&self) -> Option<AuditPosition> {
        let seen = self.seen.last_key_value().map(|(seq, head)| AuditPosition {
            seq: *seq,
            head: *head,
        });
        match (self.state.pinned, seen) {
            (Some(p), Some(s)) if p.seq >= s.seq => Some(p),
            (p, None) => p,
            (_, s) => s,
        }
    }

    /// The positions seen that the chain must pass through.
    pub(crate) fn seen(&self) -> impl Iterator<Item = AuditPosition> + '_ {
        self.seen.iter().map(|(seq, head)| AuditPosition {
            seq: *seq,
            head: *head,
        })
    }

    /// Checks position `p`, from an answer to a request sent when the newest position was
    /// `at_send`: not behind it, not another head at a position seen or verified.
    pub(crate) fn saw_position(
        &mut self,
        at_send: Option<AuditPosition>,
        p: AuditPosition,
    ) -> Result<(), ClientError> {
        if let Some(pinned) = at_send.filter(|a| p.seq < a.seq) {
            return Err(self.caught(Rollback::Behind { pinned, seen: p }));
        }
        self.check_against_pin(p)?;
        if !self.check_seen(p)? && self.state.pinned.is_none_or(|v| p.seq > v.seq) {
            if self.seen.len() >= MAX_UNCHECKED {
                return Err(TOO_MANY_UNCHECKED);
            }
            self.seen.insert(p.seq, p.head);
        }
        Ok(())
    }

    /// Refuses a position behind or beside the verified one.
    fn check_against_pin(&mut self, p: AuditPosition) -> Result<(), ClientError> {
        match self.state.pinned {
            Some(v) if p.seq < v.seq => Err(self.caught(Rollback::Behind { pinned: v, seen: p })),
            Some(v) if p.seq == v.seq && p.head != v.head => Err(self.caught(Rollback::Forked {
                seq: v.seq,
                pinned: v.head,
                seen: p.head,
            })),
            _ => Ok(()),
        }
    }

    /// Adds `p` to the positions the chain must pass through (a checkpoint's, or one another
    /// process verified).
    pub(crate) fn must_pass(&mut self, p: AuditPosition) -> Result<(), ClientError> {
        if !self.check_seen(p)? {
            self.seen.insert(p.seq, p.head);
        }
        Ok(())
    }

    /// Refuses `p` if another head was seen at its seq; whether `p` was seen already.
    fn check_seen(&mut self, p: AuditPosition) -> Result<bool, ClientError> {
        match self.seen.get(&p.seq) {
            Some(h) if *h != p.head => {
                let pinned = *h;
                Err(self.caught(Rollback::Forked {
                    seq: p.seq,
                    pinned,
                    seen: p.head,
                }))
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// Takes `v` as the verified position: the chain up to it was read and checked, and
    /// passes through every position seen up to it.
    pub(crate) fn pin_verified(&mut self, v: AuditPosition) {
        if self.state.pinned.is_none_or(|p| p.seq < v.seq) {
            self.state.pinned = Some(v);
        }
        self.seen.retain(|seq, _| *seq > v.seq);
    }

    /// Takes `v` as the verified position without reading the chain (remembered from an
    /// earlier run, or a checkpoint's): every position seen must be at or past it.
    pub(crate) fn pin_remembered(&mut self, v: AuditPosition) -> Result<(), ClientError> {
        if self.state.pinned.is_some_and(|p| p.seq > v.seq) {
            return Ok(());
        }
        self.state.pinned = Some(v);
        let seen: Vec<_> = self.seen().filter(|s| s.seq <= v.seq).collect();
        for s in seen {
            self.check_against_pin(s)?;
            self.seen.remove(&s.seq);
        }
        Ok(())
    }

    /// Checks version `seen` of `name` (tagged `tag`), from an answer at position `at`,
    /// against the newest known when the request left; remembers it, and notes it as given
    /// in this session.
    pub(crate) fn saw_version(
        &mut self,
        name: &SecretName,
        tag: &NameTag,
        at_send: Option<u64>,
        seen: u64,
        at: u64,
    ) -> Result<(), ClientError> {
        if let Err(r) = self.state.saw_version(name, tag, at_send, seen) {
            return Err(self.caught(r));
        }
        let full = self.served.len() >= MAX_UNCHECKED;
        match self.served.get_mut(&(*tag, seen)) {
            Some((_, newest_at)) => *newest_at = (*newest_at).max(at),
            None if full => return Err(TOO_MANY_UNCHECKED),
            None => {
                self.served.insert((*tag, seen), (name.clone(), at));
            }
        }
        Ok(())
    }

    /// Checks every version given in an answer at or before seq `end` against the stores
    /// in the verified events up to `end` (`stored`: seq, tag, version): none may store a
    /// newer version before the answer. Those checked are then forgotten.
    pub(crate) fn recheck_served(
        &mut self,
        stored: &[(u64, NameTag, u64)],
        end: u64,
    ) -> Result<(), ClientError> {
        let mut by_tag: BTreeMap<NameTag, Vec<(u64, u64)>> = BTreeMap::new();
        for (seq, tag, v) in stored {
            by_tag.entry(*tag).or_default().push((*seq, *v));
        }
        let stale = self
            .served
            .iter()
            .filter(|(_, (_, at))| *at <= end)
            .find_map(|((tag, version), (name, at))| {
                let newest = by_tag
                    .get(tag)?
                    .iter()
                    .filter(|(seq, _)| seq <= at)
                    .map(|(_, v)| *v)
                    .max()?;
                (newest > *version).then(|| Rollback::Version {
                    name: name.to_string(),
                    newest,
                    seen: *version,
                })
            });
        if let Some(r) = stale {
            return Err(self.caught(r));
        }
        self.served.retain(|_, (_, at)| *at > end);
        Ok(())
    }

    /// Notes that an answer at position `at` gave `public` as the public key of `name`.
    pub(crate) fn saw_key(
        &mut self,
        name: &KeyName,
        public: &[u8],
        at: u64,
    ) -> Result<(), ClientError> {
        let digest = keyserver_protocol::signing::message_digest(public);
        let full = self.served_keys.len() >= MAX_UNCHECKED;
        match self.served_keys.get_mut(&(name.clone(), digest)) {
            Some(newest_at) => *newest_at = (*newest_at).max(at),
            None if full => return Err(TOO_MANY_UNCHECKED),
            None => {
                self.served_keys.insert((name.clone(), digest), at);
            }
        }
        Ok(())
    }

    /// Takes in the key events of a verified stretch of the chain ending at `end`, in
    /// order: `(name, Some(digest))` for a key made or imported with that public key,
    /// `(name, None)` for one deleted. Then every public key given in answers up to `end`
    /// must be the one the chain recorded for its name: the one remembered before, or one
    /// the stretch gave it. A key made before this client's verified position, and never
    /// seen, is remembered as first given.
    pub(crate) fn recheck_served_keys(
        &mut self,
        changes: &[(KeyName, Option<[u8; 32]>)],
        end: u64,
    ) -> Result<(), ClientError> {
        let mut recorded: BTreeMap<&KeyName, Vec<[u8; 32]>> = BTreeMap::new();
        for (name, digest) in changes {
            let entry = recorded.entry(name).or_default();
            if let Some(d) = self.state.key_pin(name) {
                entry.push(d);
            }
            self.state.pin_key(name, *digest);
            entry.extend(digest);
        }
        let mut swapped = None;
        let mut first_seen = Vec::new();
        for ((name, digest), at) in &self.served_keys {
            if *at > end {
                continue;
            }
            let known = recorded.get(name);
            let pin = self.state.key_pin(name);
            let ok = pin == Some(*digest) || known.is_some_and(|ds| ds.contains(digest));
            match (ok, pin, known) {
                (true, _, _) => {}
                // Made before the chain this client verified, and never seen: first seen.
                (false, None, None) => first_seen.push((name.clone(), *digest)),
                _ => {
                    swapped = Some(Rollback::KeySwapped {
                        name: name.to_string(),
                    });
                    break;
                }
            }
        }
        if let Some(r) = swapped {
            return Err(self.caught(r));
        }
        for (name, digest) in first_seen {
            self.state.pin_key(&name, Some(digest));
        }
        self.served_keys.retain(|_, at| *at > end);
        Ok(())
    }
}

/// What a session knows of its account's keys: the storage key, and the epoch it is sealed
/// for. A password change moves the epoch; a key rotation replaces both.
#[derive(Clone, Debug)]
pub(crate) struct AccountKeys {
    pub(crate) storage_key: Arc<StorageKey>,
    pub(crate) epoch: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("id", &self.channel.id())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        conn: Connection,
        user: UserName,
        channel: ClientChannel,
        storage_key: StorageKey,
        epoch: u64,
        server: ServerId,
    ) -> Self {
        let mut state = AccountState::new();
        state.epoch = epoch;
        Self {
            conn: Arc::new(std::sync::RwLock::new(conn)),
            user,
            channel: Arc::new(channel),
            keys: Arc::new(std::sync::RwLock::new(AccountKeys {
                storage_key: Arc::new(storage_key),
                epoch,
            })),
            server,
            checks: Arc::new(std::sync::Mutex::new(Checks::new(state))),
        }
    }

    pub(crate) fn checks(&self) -> std::sync::MutexGuard<'_, Checks> {
        // Every critical section is a check and an assignment: a panic cannot leave the
        // state half-written.
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The server this session is on (from its long-term key, which the login
    /// authenticated).
    pub fn server_id(&self) -> ServerId {
        self.server
    }

    /// Gives the session what this client remembers of the account from earlier runs (see
    /// [`crate::state`]): from now on, every answer is checked against it, and it is kept
    /// up to date. Fails with [`ClientError::Rollback`] if the login already showed an
    /// older epoch.
    pub fn remember(&self, mut state: AccountState) -> Result<(), ClientError> {
        let mut c = self.checks();
        if let Err(r) = state.saw_epoch(self.epoch()) {
            return Err(c.caught(r));
        }
        state.tags_under(self.keys().storage_key.tag_key_id());
        let seen = std::mem::replace(&mut c.state, state);
        if let Err(r) = c.state.merge(&seen) {
            return Err(c.caught(r));
        }
        c.remembered = c.state.pinned;
        if let Some(p) = c.state.pinned {
            c.pin_remembered(p)?;
        }
        Ok(())
    }

    /// What this client now knows of the account, to keep for the next run. Once the
    /// server was caught going back ([`Self::caught_rollback`]), keep nothing of it.
    pub fn state(&self) -> AccountState {
        self.checks().state.clone()
    }

    /// Whether this session caught the server going back (an error
    /// [`ClientError::Rollback`] was returned): what it saw since must not be kept.
    pub fn caught_rollback(&self) -> bool {
        self.checks().caught
    }

    /// The audit position remembered when [`Self::remember`] was called, or the
    /// checkpoint's (`None`: nothing was, and the history first seen was trusted).
    pub fn remembered_position(&self) -> Option<AuditPosition> {
        self.checks().remembered
    }

    /// Starts from checkpoint `c`: the chain must pass through its position, and every
    /// position the server shows must be at or past it. (The chain up to it is still read
    /// from its start, for the versions stored before it.)
    pub(crate) fn started_from(
        &self,
        c: keyserver_protocol::ops::StoredCheckpoint,
    ) -> Result<(), ClientError> {
        let mut checks = self.checks();
        let p = c.checkpoint.position;
        let behind = checks.seen().find(|s| s.seq < p.seq);
        if let Some(seen) = behind {
            return Err(checks.caught(Rollback::Behind { pinned: p, seen }));
        }
        checks.must_pass(p)?;
        checks.remembered = Some(p);
        checks.checkpoint = Some(c);
        Ok(())
    }

    /// The checkpoint this session started from, if it remembered nothing of the account
    /// ([`Self::start_from_checkpoint`]).
    pub fn started_from_checkpoint(&self) -> Option<keyserver_protocol::ops::StoredCheckpoint> {
        self.checks().checkpoint
    }

    /// The newest audit position seen in this session, or verified.
    pub fn position(&self) -> Option<AuditPosition> {
        self.checks().newest()
    }

    /// The newest audit position verified (the chain to it was read and checked).
    pub fn verified_position(&self) -> Option<AuditPosition> {
        self.checks().state.pinned
    }

    /// The tag the server knows `name` by, under the current storage key.
    pub(crate) fn tag(&self, name: &SecretName) -> NameTag {
        self.keys().storage_key.name_tag(name)
    }

    /// The newest version of `name` (tagged `tag`) known, to check an answer against.
    pub(crate) fn newest_known(&self, name: &SecretName, tag: &NameTag) -> Option<u64> {
        self.checks().state.newest_known(name, tag)
    }

    /// Notes that an answer at `at` gave `public` as the public key of `name`: the chain
    /// must record it ([`Session::check_recent_events`] checks).
    pub(crate) fn saw_key(
        &self,
        name: &KeyName,
        public: &[u8],
        at: AuditPosition,
    ) -> Result<(), ClientError> {
        self.checks().saw_key(name, public, at.seq)
    }

    /// Checks version `seen` of `name`, tagged `tag`, from an answer at position `at` (see
    /// [`AccountState::saw_version`]).
    pub(crate) fn saw_version(
        &self,
        name: &SecretName,
        tag: &NameTag,
        at_send: Option<u64>,
        seen: u64,
        at: AuditPosition,
    ) -> Result<(), ClientError> {
        self.checks().saw_version(name, tag, at_send, seen, at.seq)
    }

    /// The account's storage key and epoch, as this session knows them.
    pub(crate) fn keys(&self) -> AccountKeys {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces what this session knows of the account's keys (after a password change or
    /// a key rotation it made).
    pub(crate) fn set_keys(&self, keys: AccountKeys) {
        let epoch = keys.epoch;
        let mut c = self.checks();
        c.state.epoch = c.state.epoch.max(epoch);
        drop(c);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    }

    /// The account's epoch, as this session knows it (see
    /// `keyserver_protocol::seal::MasterKey::seal_storage_key`).
    pub fn epoch(&self) -> u64 {
        self.keys().epoch
    }

    /// The user this session is logged in as.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The connection requests of this session go over.
    pub fn connection(&self) -> Connection {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Moves the session to another connection (of either transport, even to another
    /// server instance sharing the database): its next requests go there. No login, no
    /// password: the session lives above connections.
    pub fn move_to(&self, conn: &Connection) {
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = conn.clone();
    }

    /// Seals `op`, sends it, opens the answer. The operations of this crate (store,
    /// retrieve, …) are built on it; it is public for tests and for tools that speak the
    /// protocol directly. An [`OpResponse::Error`] comes back as the matching
    /// [`ClientError`].
    ///
    /// A request whose connection was lost is sent again, same bytes, on a new connection
    /// (see [`Connection`]). If the server had applied it, it answers what it answered
    /// then; if it had received but not yet finished it, it says `REPLAYED`: a read is then
    /// sealed again under a new sequence number, a mutation is sent again after a pause
    /// until its recorded answer is there.
    pub async fn call(&self, op: &OpRequest) -> Result<OpResponse, ClientError> {
        self.call_at(op).await.map(|(r, _)| r)
    }

    /// As [`Self::call`], for an operation that appends its own audit event: its answer's
    /// position must be past every position seen before it was sent (it includes that
    /// event). Returns the answer and its position.
    pub(crate) async fn call_recorded(
        &self,
        op: &OpRequest,
        what: &'static str,
    ) -> Result<(OpResponse, AuditPosition), ClientError> {
        let at_send = self.position();
        let (r, at) = self.call_at(op).await?;
        if let Some(before) = at_send.filter(|b| at.seq <= b.seq) {
            return Err(self
                .checks()
                .caught(Rollback::Unrecorded { what, at: before }));
        }
        Ok((r, at))
    }

    /// As [`Self::call`]; also returns the account's position the answer carried.
    pub(crate) async fn call_at(
        &self,
        op: &OpRequest,
    ) -> Result<(OpResponse, AuditPosition), ClientError> {
        // The answer must not be behind what was seen before it was asked for (answers to
        // requests sent concurrently may come back in any order).
        let at_send = self.position();
        // Zeroized when dropped, as the opened answer below: an import carries a private key
        // in clear here, an export's answer too.
        let body = zeroize::Zeroizing::new(op.encode());
        let seal = |body: &[u8]| {
            self.channel
                .seal_request(body)
                .map_err(|_| ClientError::InvalidInput("request too large".into()))
        };
        let mut req = seal(&body)?;
        let mut attempt = 0u32;
        let resp = loop {
            let sent = if op.is_guess() {
                // It counts a password guess: never sent twice behind the caller's back.
                self.connection()
                    .call_once(&Request::Sealed(req.clone()))
                    .await
            } else {
                self.connection().call(&Request::Sealed(req.clone())).await
            };
            match sent {
                Ok(Response::Sealed(resp)) => break resp,
                Ok(_) => return Err(ClientError::Protocol("unsealed reply to a sealed request")),
                Err(ClientError::Server(ErrorCode::REPLAYED))
                    if attempt < REPLAY_RETRIES && !op.is_guess() =>
                {
                    attempt += 1;
                    if op.is_mutation() {
                        crate::rt::sleep(std::time::Duration::from_millis(20) * 2u32.pow(attempt))
                            .await;
                    } else {
                        req = seal(&body)?;
                    }
                }
                Err(ClientError::Server(ErrorCode::REPLAYED)) => {
                    return Err(ClientError::Protocol(
                        "the server did not confirm the request; check its outcome with list or audit",
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        let plain =
            zeroize::Zeroizing::new(self.channel.open_response(req.seq, &resp).map_err(|_| {
                ClientError::Integrity("the server's response did not authenticate")
            })?);
        let answer =
            OpAnswer::decode(&plain).map_err(|_| ClientError::Protocol("undecodable response"))?;
        match (answer.position, answer.response) {
            (Some(seen), r) => {
                self.checks().saw_position(at_send, seen)?;
                match r {
                    OpResponse::Error(e) => Err(e.into()),
                    r => Ok((r, seen)),
                }
            }
            (None, OpResponse::Error(e)) => Err(e.into()),
            // Every answer but a refusal carries the account's position: one without it
            // could hide that the server went back.
            (None, _) => Err(ClientError::Protocol(
                "an answer without the account's audit position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64, h: u8) -> AuditPosition {
        AuditPosition { seq, head: [h; 32] }
    }

    fn rollback(r: Result<(), ClientError>) -> Rollback {
        match r {
            Err(ClientError::Rollback(r)) => r,
            other => panic!("not a rollback: {other:?}"),
        }
    }

    #[test]
    fn positions_behind_or_beside_the_verified_one_are_refused() {
        let mut c = Checks::new(AccountState::new());
        c.pin_remembered(pos(5, 1)).unwrap();
        // Behind what was verified, or another head at it: refused, and noted.
        assert!(matches!(
            rollback(c.saw_position(None, pos(4, 9))),
            Rollback::Behind { .. }
        ));
        assert!(c.caught);
        let mut c = Checks::new(AccountState::new());
        c.pin_remembered(pos(5, 1)).unwrap();
        assert!(matches!(
            rollback(c.saw_position(None, pos(5, 2))),
            Rollback::Forked { seq: 5, .. }
        ));
        // Answers to concurrent requests may come back in any order, but not behind what
        // was seen when their request left, and never two heads at one seq.
        let mut c = Checks::new(AccountState::new());
        c.pin_remembered(pos(5, 1)).unwrap();
        c.saw_position(Some(pos(5, 1)), pos(8, 3)).unwrap();
        c.saw_position(Some(pos(5, 1)), pos(7, 4)).unwrap();
        assert_eq!(c.newest(), Some(pos(8, 3)));
        assert!(matches!(
            rollback(c.saw_position(Some(pos(8, 3)), pos(7, 4))),
            Rollback::Behind { .. }
        ));
        let mut c = Checks::new(AccountState::new());
        c.saw_position(None, pos(7, 4)).unwrap();
        assert!(matches!(
            rollback(c.saw_position(None, pos(7, 5))),
            Rollback::Forked { seq: 7, .. }
        ));
        assert!(!Checks::new(AccountState::new()).caught);
    }

    #[test]
    fn a_remembered_position_must_not_be_ahead_of_what_the_server_showed() {
        // A checkpoint (or a state) taken after the server already showed an older
        // position: the server is behind it.
        let mut c = Checks::new(AccountState::new());
        c.saw_position(None, pos(3, 1)).unwrap();
        assert!(matches!(
            rollback(c.pin_remembered(pos(6, 2))),
            Rollback::Behind { .. }
        ));
        // Verifying the chain to a position takes every position seen up to it.
        let mut c = Checks::new(AccountState::new());
        c.saw_position(None, pos(3, 1)).unwrap();
        c.saw_position(None, pos(9, 1)).unwrap();
        c.pin_verified(pos(6, 2));
        assert_eq!(c.state.pinned, Some(pos(6, 2)));
        assert_eq!(c.seen().collect::<Vec<_>>(), [pos(9, 1)]);
    }

    #[test]
    fn a_version_given_is_refused_once_the_chain_shows_a_newer_one_stored_before_it() {
        let w = SecretName::new("wallet").unwrap();
        let t = NameTag([1; 32]);
        let mut c = Checks::new(AccountState::new());
        // Version 1 given at event 12; the chain shows version 2 stored at event 11.
        c.saw_version(&w, &t, None, 1, 12).unwrap();
        assert!(matches!(
            rollback(c.recheck_served(&[(11, t, 2)], 12)),
            Rollback::Version {
                newest: 2,
                seen: 1,
                ..
            }
        ));
        // Stored after the answer: the answer was current when given.
        let mut c = Checks::new(AccountState::new());
        c.saw_version(&w, &t, None, 1, 12).unwrap();
        c.recheck_served(&[(13, t, 2), (11, NameTag([2; 32]), 5)], 13)
            .unwrap();
        // Answers past the chain read so far wait for the next read.
        let mut c = Checks::new(AccountState::new());
        c.saw_version(&w, &t, None, 1, 20).unwrap();
        c.recheck_served(&[], 15).unwrap();
        assert!(c.recheck_served(&[(18, t, 2)], 20).is_err());
    }

    #[test]
    fn a_public_key_must_be_the_one_the_chain_records_for_its_name() {
        use keyserver_protocol::signing::message_digest;
        let name = KeyName::new("eth-hot").unwrap();
        let (a, b) = ([2u8; 33], [3u8; 33]);
        // Made in the verified stretch with public key a: a given is fine, and remembered.
        let mut c = Checks::new(AccountState::new());
        c.saw_key(&name, &a, 3).unwrap();
        c.recheck_served_keys(&[(name.clone(), Some(message_digest(&a)))], 5)
            .unwrap();
        assert_eq!(c.state.key_pin(&name), Some(message_digest(&a)));
        // b given later, with nothing in the chain about it: swapped.
        c.saw_key(&name, &b, 6).unwrap();
        assert!(matches!(
            rollback(c.recheck_served_keys(&[], 7)),
            Rollback::KeySwapped { .. }
        ));
        assert!(c.caught);

        // Deleted and made again (by another device) between the answers: both given keys
        // are in the chain, and the newest is remembered.
        let mut c = Checks::new(AccountState::new());
        c.state.pin_key(&name, Some(message_digest(&a)));
        c.saw_key(&name, &a, 3).unwrap();
        c.saw_key(&name, &b, 9).unwrap();
        c.recheck_served_keys(
            &[
                (name.clone(), None),
                (name.clone(), Some(message_digest(&b))),
            ],
            10,
        )
        .unwrap();
        assert_eq!(c.state.key_pin(&name), Some(message_digest(&b)));

        // A key made before this client verified anything of it: remembered as first given,
        // then held to.
        let mut c = Checks::new(AccountState::new());
        c.saw_key(&name, &a, 3).unwrap();
        c.recheck_served_keys(&[], 4).unwrap();
        assert_eq!(c.state.key_pin(&name), Some(message_digest(&a)));
        c.saw_key(&name, &b, 5).unwrap();
        assert!(matches!(
            rollback(c.recheck_served_keys(&[], 6)),
            Rollback::KeySwapped { .. }
        ));
        // An answer past the stretch read waits for the next check.
        let mut c = Checks::new(AccountState::new());
        c.state.pin_key(&name, Some(message_digest(&a)));
        c.saw_key(&name, &b, 9).unwrap();
        c.recheck_served_keys(&[], 8).unwrap();
        assert!(c.recheck_served_keys(&[], 9).is_err());
    }
}
