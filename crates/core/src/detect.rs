//! Detection of a process caching credentials too long: per credential, at least `min_failures`
//! expired-token failures whose first and last are at least `min_span` apart.
//!
//! Everything a credential's state holds is merged commutatively (counts add, first/last are min/max, samples
//! keep the smallest values with exact counts), so the incident does not depend on the order failures arrive in.
//! The lifecycle (open → notify once → re-notify at most every `renotify` → resolve after `quiet`) is a pure
//! state machine driven by a clock the caller passes in; [`Detector`] runs it over an [`IncidentStore`] with
//! optimistic concurrency, so of several invocations racing on one credential exactly one opens the incident.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::cause::{Cause, CauseFacts};
use crate::identity::CredentialKey;
use crate::scan::{Failure, FailureKind};
use crate::timestamp::Timestamp;

/// Distinct values kept per sample (source IPs, user agents, calls).
pub const SAMPLE_VALUES: usize = 8;
/// A pending notification older than this is sent again by the sweep (its sender died without saying it
/// gave up).
pub const PENDING_GRACE_SECONDS: i64 = 300;
/// Attempts at a conditional write before giving up on a credential for this invocation.
pub const MAX_CONFLICT_RETRIES: usize = 16;

/// The thresholds of DESIGN.md, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_failures: u64,
    pub min_span_seconds: i64,
    pub renotify_seconds: i64,
    pub quiet_seconds: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_failures: 3,
            min_span_seconds: 300,
            renotify_seconds: 3600,
            quiet_seconds: 1800,
        }
    }
}

/// Values with their counts, keeping the `SAMPLE_VALUES` smallest: a cap that still merges exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample(BTreeMap<String, u64>);

impl Sample {
    pub fn add(&mut self, value: &str, count: u64) {
        *self.0.entry(value.to_owned()).or_default() += count;
        while self.0.len() > SAMPLE_VALUES {
            self.0.pop_last();
        }
    }

    pub fn merge(&mut self, other: &Sample) {
        for (value, count) in &other.0 {
            self.add(value, *count);
        }
    }

    /// Values, most frequent first.
    pub fn by_count(&self) -> Vec<(&str, u64)> {
        let mut values: Vec<_> = self.0.iter().map(|(v, c)| (v.as_str(), *c)).collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        values
    }

    pub fn values(&self) -> Vec<String> {
        self.by_count()
            .into_iter()
            .map(|(v, _)| v.to_owned())
            .collect()
    }
}

/// What a batch of failures says about one credential. Merging is commutative and associative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub credential: CredentialKey,
    pub facts: CauseFacts,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub failures: u64,
    pub first_failure: Timestamp,
    pub last_failure: Timestamp,
    pub credential_created: Option<Timestamp>,
    pub source_ips: Sample,
    pub user_agents: Sample,
    /// `eventSource eventName` of the failed calls.
    pub calls: Sample,
}

impl Observation {
    /// The observation of one expired-token failure; `None` for related errors, which do not open incidents.
    pub fn of(failure: &Failure) -> Option<Self> {
        if failure.kind != FailureKind::ExpiredToken {
            return None;
        }
        let id = &failure.identity;
        let mut observation = Self {
            credential: id.credential_key(),
            facts: CauseFacts {
                kind: (&id.kind).into(),
                role_name: id.role_name().map(str::to_owned),
                principal: id.principal.clone(),
                session_name: id.session_name.clone(),
                temporary_key: id.is_temporary_key(),
                ec2_role_delivery: id.ec2_role_delivery,
                web_identity_provider: id.web_identity_provider.clone(),
                assumed_another_role: failure.event_name.as_deref() == Some("AssumeRole")
                    && failure.event_source.as_deref() == Some("sts.amazonaws.com"),
            },
            account_id: failure.account_id().map(str::to_owned),
            region: failure.region.clone(),
            failures: 1,
            first_failure: failure.time,
            last_failure: failure.time,
            credential_created: id.credential_created,
            source_ips: Sample::default(),
            user_agents: Sample::default(),
            calls: Sample::default(),
        };
        if let Some(ip) = &failure.source_ip {
            observation.source_ips.add(ip, 1);
        }
        if let Some(agent) = &failure.user_agent {
            observation.user_agents.add(agent, 1);
        }
        let call = match (&failure.event_source, &failure.event_name) {
            (Some(source), Some(name)) => format!("{source} {name}"),
            (Some(one), None) | (None, Some(one)) => one.clone(),
            (None, None) => String::new(),
        };
        if !call.is_empty() {
            observation.calls.add(&call, 1);
        }
        Some(observation)
    }

    pub fn merge(&mut self, other: &Observation) {
        self.failures += other.failures;
        self.first_failure = self.first_failure.min(other.first_failure);
        self.last_failure = self.last_failure.max(other.last_failure);
        self.credential_created = min_some(self.credential_created, other.credential_created);
        self.account_id = min_some(self.account_id.take(), other.account_id.clone());
        self.region = min_some(self.region.take(), other.region.clone());
        self.source_ips.merge(&other.source_ips);
        self.user_agents.merge(&other.user_agents);
        self.calls.merge(&other.calls);
        let facts = &mut self.facts;
        let theirs = &other.facts;
        facts.kind = min_some(facts.kind.take(), theirs.kind.clone());
        facts.role_name = min_some(facts.role_name.take(), theirs.role_name.clone());
        if theirs.principal < facts.principal {
            facts.principal = theirs.principal.clone();
        }
        facts.session_name = min_some(facts.session_name.take(), theirs.session_name.clone());
        facts.temporary_key |= theirs.temporary_key;
        facts.ec2_role_delivery |= theirs.ec2_role_delivery;
        facts.web_identity_provider = min_some(
            facts.web_identity_provider.take(),
            theirs.web_identity_provider.clone(),
        );
        facts.assumed_another_role |= theirs.assumed_another_role;
    }

    pub fn span_seconds(&self) -> i64 {
        self.last_failure.seconds_since(self.first_failure)
    }

    pub fn meets(&self, policy: &Policy) -> bool {
        self.failures >= policy.min_failures && self.span_seconds() >= policy.min_span_seconds
    }

    pub fn likely_cause(&self) -> Cause {
        Cause::infer(&self.facts)
    }

    /// Credential age at the last failure, when the records say when it was minted.
    pub fn credential_age_seconds(&self) -> Option<i64> {
        self.credential_created
            .map(|created| self.last_failure.seconds_since(created))
    }

    pub fn access_key_id(&self) -> Option<&str> {
        self.credential.access_key_id()
    }
}

fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Observations grouped by credential.
pub type Observations = BTreeMap<CredentialKey, Observation>;

/// Adds one failure to its credential's observation (related errors are ignored).
pub fn observe_into(observations: &mut Observations, failure: &Failure) {
    let Some(observation) = Observation::of(failure) else {
        return;
    };
    match observations.get_mut(&observation.credential) {
        Some(existing) => existing.merge(&observation),
        None => {
            observations.insert(observation.credential.clone(), observation);
        }
    }
}

/// Groups failures by credential, merging each group into one observation.
pub fn observe_all<'f>(failures: impl IntoIterator<Item = &'f Failure>) -> Observations {
    let mut observations = Observations::new();
    for failure in failures {
        observe_into(&mut observations, failure);
    }
    observations
}

/// Which notification is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Opened,
    Update,
    Resolved,
}

/// Where a credential is in the incident lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Failures seen, below the thresholds.
    Watching,
    Open {
        opened_at: Timestamp,
    },
    Resolved {
        opened_at: Timestamp,
        resolved_at: Timestamp,
    },
}

/// The stored state of one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialState {
    pub observation: Observation,
    pub phase: Phase,
    /// A notification decided on but not yet confirmed sent, and since when.
    pub pending: Option<(NoticeKind, Timestamp)>,
    /// The pending notification's sender reported that it could not send it, so nobody is about to: the
    /// sweep sends it without waiting out the grace period.
    #[serde(default)]
    pub abandoned: bool,
    /// When on-call was last notified, and of how many failures.
    pub notified_at: Option<Timestamp>,
    pub notified_failures: u64,
    /// The last failure when the incident was last resolved: later failures reopen it.
    pub resolved_through: Option<Timestamp>,
}

impl CredentialState {
    pub fn new(observation: Observation) -> Self {
        Self {
            observation,
            phase: Phase::Watching,
            pending: None,
            abandoned: false,
            notified_at: None,
            notified_failures: 0,
            resolved_through: None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// The state of a credential seen for the first time, and the notification due, if any.
    pub fn first(
        observation: &Observation,
        policy: &Policy,
        now: Timestamp,
    ) -> (Self, Option<NoticeKind>) {
        let mut state = Self::new(observation.clone());
        let due = state.advance(policy, now, true);
        (state, due)
    }

    /// Merges new failures and moves the lifecycle on. Returns the notification due now, if any (it is also
    /// recorded as pending until [`CredentialState::mark_sent`]).
    pub fn observe(
        &mut self,
        observation: &Observation,
        policy: &Policy,
        now: Timestamp,
    ) -> Option<NoticeKind> {
        let newer = observation.last_failure > self.observation.last_failure;
        self.observation.merge(observation);
        self.advance(policy, now, newer)
    }

    fn advance(&mut self, policy: &Policy, now: Timestamp, newer: bool) -> Option<NoticeKind> {
        let due = match self.phase {
            Phase::Watching if self.observation.meets(policy) => {
                self.phase = Phase::Open { opened_at: now };
                Some(NoticeKind::Opened)
            }
            Phase::Watching => None,
            Phase::Open { .. } => self.update_due(policy, now).then_some(NoticeKind::Update),
            // Failures after the ones it was resolved on mean the process is at it again.
            Phase::Resolved { .. }
                if newer
                    && self
                        .resolved_through
                        .is_some_and(|through| self.observation.last_failure > through) =>
            {
                self.phase = Phase::Open { opened_at: now };
                Some(NoticeKind::Opened)
            }
            Phase::Resolved { .. } => None,
        };
        self.make_pending(due, now)
    }

    fn update_due(&self, policy: &Policy, now: Timestamp) -> bool {
        self.observation.failures > self.notified_failures
            && self
                .notified_at
                .is_none_or(|at| now.seconds_since(at) >= policy.renotify_seconds)
    }

    /// An unconfirmed Opened or Resolved stays pending (it carries the latest figures when sent);
    /// an update never replaces them.
    fn make_pending(&mut self, due: Option<NoticeKind>, now: Timestamp) -> Option<NoticeKind> {
        let due = due?;
        match self.pending {
            Some((NoticeKind::Opened | NoticeKind::Resolved, _)) if due == NoticeKind::Update => {
                None
            }
            _ => {
                self.pending = Some((due, now));
                self.abandoned = false;
                Some(due)
            }
        }
    }

    /// The scheduled pass: resolves an open incident after `quiet` without failures, re-sends a pending
    /// notification whose sender did not confirm it, and sends an update that is due.
    pub fn sweep(&mut self, policy: &Policy, now: Timestamp) -> Option<NoticeKind> {
        // On-call hears of an incident before hearing it is over: an unsent Opened goes out first.
        let opening_unsent = matches!(self.pending, Some((NoticeKind::Opened, _)));
        if let Phase::Open { opened_at } = self.phase
            && !opening_unsent
            && now.seconds_since(self.observation.last_failure) >= policy.quiet_seconds
        {
            self.phase = Phase::Resolved {
                opened_at,
                resolved_at: now,
            };
            self.resolved_through = Some(self.observation.last_failure);
            self.pending = Some((NoticeKind::Resolved, now));
            self.abandoned = false;
            return Some(NoticeKind::Resolved);
        }
        if let Some((kind, since)) = self.pending
            && (self.abandoned || now.seconds_since(since) >= PENDING_GRACE_SECONDS)
        {
            self.pending = Some((kind, now));
            self.abandoned = false;
            return Some(kind);
        }
        if self.is_open() && self.pending.is_none() && self.update_due(policy, now) {
            return self.make_pending(Some(NoticeKind::Update), now);
        }
        None
    }

    /// Records that the `kind` notification went out.
    pub fn mark_sent(&mut self, kind: NoticeKind, now: Timestamp) {
        if self.pending.is_some_and(|(pending, _)| pending == kind) {
            self.pending = None;
            self.abandoned = false;
        }
        self.notified_at = Some(now);
        self.notified_failures = self.observation.failures;
    }

    /// Records that the `kind` notification could not be sent, so the next sweep sends it at once.
    pub fn mark_unsent(&mut self, kind: NoticeKind) {
        if self.pending.is_some_and(|(pending, _)| pending == kind) {
            self.abandoned = true;
        }
    }

    /// Whether the store may forget this state: resolved and confirmed, or never opened, and old.
    pub fn expires_at(&self, policy: &Policy) -> Timestamp {
        // Keep state a day past the point where a quiet credential would resolve, so late deliveries of
        // old failures still find it.
        self.observation
            .last_failure
            .plus_seconds(policy.quiet_seconds + 86_400)
    }
}

/// A state with the version it was read at, for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub state: CredentialState,
    pub version: u64,
}

/// The port for incident state. Implementations must make `save` atomic: it writes only if the stored
/// version is still `expected` (`None`: only if nothing is stored), and then stores version `expected + 1`.
pub trait IncidentStore {
    type Error: std::error::Error + Send + Sync + 'static;

    fn load(
        &self,
        credential: &CredentialKey,
    ) -> impl Future<Output = Result<Option<Versioned>, Self::Error>> + Send;

    /// Returns `Ok(false)` when another writer got there first.
    fn save(
        &self,
        state: &CredentialState,
        expected: Option<u64>,
        expires_at: Timestamp,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// States that are open or have a notification pending: what the sweep looks at.
    fn active(&self) -> impl Future<Output = Result<Vec<Versioned>, Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError<E: std::error::Error + 'static> {
    #[error("incident store: {0}")]
    Store(#[source] E),
    #[error("gave up on {credential} after {MAX_CONFLICT_RETRIES} conflicting writes")]
    Contention { credential: String },
}

/// A notification to send, with the state as it was when decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub state: CredentialState,
}

/// Runs the lifecycle over a store.
#[derive(Debug, Clone)]
pub struct Detector<S> {
    store: S,
    policy: Policy,
}

impl<S: IncidentStore> Detector<S> {
    pub fn new(store: S, policy: Policy) -> Self {
        Self { store, policy }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Merges one credential's new failures into its stored state. Of several callers racing on the same
    /// credential, exactly one gets the `Opened` notice.
    pub async fn observe(
        &self,
        observation: &Observation,
        now: Timestamp,
    ) -> Result<Option<Notice>, DetectError<S::Error>> {
        self.modify(&observation.credential, |stored| {
            Some(match stored {
                Some(mut state) => {
                    let due = state.observe(observation, &self.policy, now);
                    (state, due)
                }
                None => CredentialState::first(observation, &self.policy, now),
            })
        })
        .await
    }

    /// The scheduled pass over every active credential.
    pub async fn sweep(&self, now: Timestamp) -> Result<Vec<Notice>, DetectError<S::Error>> {
        let mut notices = Vec::new();
        for active in self.store.active().await.map_err(DetectError::Store)? {
            let credential = active.state.observation.credential.clone();
            let notice = self
                .modify(&credential, |stored| {
                    stored.map(|mut state| {
                        let due = state.sweep(&self.policy, now);
                        (state, due)
                    })
                })
                .await?;
            notices.extend(notice);
        }
        Ok(notices)
    }

    /// Confirms a notification was sent, so it is not sent again.
    pub async fn mark_sent(
        &self,
        notice: &Notice,
        now: Timestamp,
    ) -> Result<(), DetectError<S::Error>> {
        self.record(notice, |state| state.mark_sent(notice.kind, now))
            .await
    }

    /// Records that a notification could not be sent (its sender gave up), so the sweep need not wait to
    /// know that nobody else is sending it.
    pub async fn mark_unsent(&self, notice: &Notice) -> Result<(), DetectError<S::Error>> {
        self.record(notice, |state| state.mark_unsent(notice.kind))
            .await
    }

    /// Records what became of a notice in its credential's stored state; nothing new is due from that.
    async fn record(
        &self,
        notice: &Notice,
        change: impl Fn(&mut CredentialState),
    ) -> Result<(), DetectError<S::Error>> {
        self.modify(&notice.state.observation.credential, |stored| {
            stored.map(|mut state| {
                change(&mut state);
                (state, None)
            })
        })
        .await
        .map(|_| ())
    }

    /// Read, change, write-if-unchanged; on a conflict, again from the top. `change` gets the stored state
    /// (if any) and returns the state to store with the notification due, or `None` to leave things be.
    async fn modify(
        &self,
        credential: &CredentialKey,
        change: impl Fn(Option<CredentialState>) -> Option<(CredentialState, Option<NoticeKind>)>,
    ) -> Result<Option<Notice>, DetectError<S::Error>> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let stored = self
                .store
                .load(credential)
                .await
                .map_err(DetectError::Store)?;
            let expected = stored.as_ref().map(|v| v.version);
            let Some((state, due)) = change(stored.map(|v| v.state)) else {
                return Ok(None);
            };
            let expires_at = state.expires_at(&self.policy);
            if self
                .store
                .save(&state, expected, expires_at)
                .await
                .map_err(DetectError::Store)?
            {
                return Ok(due.map(|kind| Notice { kind, state }));
            }
        }
        Err(DetectError::Contention {
            credential: credential.to_string(),
        })
    }
}

/// An in-memory [`IncidentStore`] for the CLI and tests, with the same conditional semantics as DynamoDB.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: std::sync::Mutex<BTreeMap<CredentialKey, Versioned>>,
}

/// The in-memory store cannot fail; its lock can only be poisoned by a panic elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("in-memory incident store is unusable after a panic")]
pub struct MemoryStoreError;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> Vec<CredentialState> {
        self.states
            .lock()
            .map(|states| states.values().map(|v| v.state.clone()).collect())
            .unwrap_or_default()
    }
}

impl IncidentStore for MemoryStore {
    type Error = MemoryStoreError;

    async fn load(
        &self,
        credential: &CredentialKey,
    ) -> Result<Option<Versioned>, MemoryStoreError> {
        let states = self.states.lock().map_err(|_| MemoryStoreError)?;
        Ok(states.get(credential).cloned())
    }

    async fn save(
        &self,
        state: &CredentialState,
        expected: Option<u64>,
        _expires_at: Timestamp,
    ) -> Result<bool, MemoryStoreError> {
        let mut states = self.states.lock().map_err(|_| MemoryStoreError)?;
        let key = &state.observation.credential;
        let current = states.get(key).map(|v| v.version);
        if current != expected {
            return Ok(false);
        }
        let version = expected.map_or(1, |v| v + 1);
        states.insert(
            key.clone(),
            Versioned {
                state: state.clone(),
                version,
            },
        );
        Ok(true)
    }

    async fn active(&self) -> Result<Vec<Versioned>, MemoryStoreError> {
        let states = self.states.lock().map_err(|_| MemoryStoreError)?;
        Ok(states
            .values()
            .filter(|v| v.state.is_open() || v.state.pending.is_some())
            .cloned()
            .collect())
    }
}
