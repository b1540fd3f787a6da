//! Incident state and event claims in one DynamoDB table (`pk`/`sk` keys, TTL on `expires_at`):
//!
//! - `pk = cred#<credential>`, `sk = state`: the credential's state as JSON, with a `version` that every
//!   write checks (optimistic concurrency: of racing writers exactly one wins, the others re-read);
//! - `pk = cred#<credential>`, `sk = history`: the key's CloudTrail history looked up when its incident
//!   opened (or why it could not be), so later alerts carry it without looking it up again;
//! - `pk = active`, `sk = <credential>`: present while the credential is open or has an alert pending, so the
//!   sweep is a Query, not a Scan; written in the same transaction as the state;
//! - `pk = event#<eventID>`, `sk = claim`: an event being counted (with the `holder` delivery that claimed
//!   it) or counted (no holder); conditional puts make a redelivered record count once, while the holder's
//!   own retry may take its unfinished claim again.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use tokenwatch_core::contract::table::{PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};
use tokenwatch_core::detect::{CredentialState, IncidentStore, Versioned};
use tokenwatch_core::history::{Enrichment, HistoryCache};
use tokenwatch_core::identity::CredentialKey;
use tokenwatch_core::ports::{ClaimRequest, EventClaims};
use tokenwatch_core::timestamp::Timestamp;
use tracing::debug;

use crate::AwsError;

/// TransactWriteItems takes at most 100 actions.
pub const MAX_TRANSACT_ITEMS: usize = 100;
/// BatchWriteItem takes at most 25 requests.
pub const MAX_BATCH_WRITE_ITEMS: usize = 25;
/// How long a claimed `eventID` is remembered (CloudTrail's duplicate deliveries come within hours).
pub const CLAIM_TTL_SECONDS: i64 = 7 * 86_400;
/// Rounds of retrying unprocessed BatchWriteItem requests.
const MAX_UNPROCESSED_ROUNDS: usize = 8;

const STATE_SORT_KEY: &str = "state";
const CLAIM_SORT_KEY: &str = "claim";
const HOLDER: &str = "holder";
const HISTORY_SORT_KEY: &str = "history";
const HISTORY: &str = "history";
const ACTIVE_PARTITION: &str = "active";
const VERSION: &str = "version";
const STATE: &str = "state";
const CREDENTIAL: &str = "credential";
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The table key of a credential: the access key id, or the principal and session.
pub fn credential_id(credential: &CredentialKey) -> String {
    match credential {
        CredentialKey::AccessKey(id) => id.clone(),
        CredentialKey::Session {
            principal,
            session_name,
        } => format!("{principal}#{}", session_name.as_deref().unwrap_or("")),
    }
}

fn state_key(credential: &CredentialKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            s(format!("cred#{}", credential_id(credential))),
        ),
        (SORT_KEY.to_owned(), s(STATE_SORT_KEY)),
    ])
}

fn history_key(credential: &CredentialKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            s(format!("cred#{}", credential_id(credential))),
        ),
        (SORT_KEY.to_owned(), s(HISTORY_SORT_KEY)),
    ])
}

fn active_key(credential: &CredentialKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(ACTIVE_PARTITION)),
        (SORT_KEY.to_owned(), s(credential_id(credential))),
    ])
}

fn claim_key(event_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(format!("event#{event_id}"))),
        (SORT_KEY.to_owned(), s(CLAIM_SORT_KEY)),
    ])
}

fn invalid(operation: &'static str, message: impl Into<String>) -> AwsError {
    AwsError {
        operation,
        message: message.into(),
        retryable: false,
    }
}

/// Why each action of a cancelled transaction failed (`None` where it did not).
fn cancellation_codes<R>(
    error: &SdkError<TransactWriteItemsError, R>,
) -> Option<Vec<Option<String>>> {
    match error.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(
            e.cancellation_reasons()
                .iter()
                .map(|r| r.code().filter(|c| *c != "None").map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn load_item(
        &self,
        key: HashMap<String, AttributeValue>,
    ) -> Result<Option<Versioned>, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        decode(&item).map(Some)
    }
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<Versioned, AwsError> {
    let version = item
        .get(VERSION)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid("dynamodb:GetItem", "state item without a numeric version"))?;
    let json = item
        .get(STATE)
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| invalid("dynamodb:GetItem", "state item without a state"))?;
    let state = serde_json::from_str(json).map_err(|e| {
        invalid(
            "dynamodb:GetItem",
            format!("state item does not decode: {e}"),
        )
    })?;
    Ok(Versioned { state, version })
}

impl IncidentStore for DynamoStore {
    type Error = AwsError;

    async fn load(&self, credential: &CredentialKey) -> Result<Option<Versioned>, AwsError> {
        self.load_item(state_key(credential)).await
    }

    async fn save(
        &self,
        state: &CredentialState,
        expected: Option<u64>,
        expires_at: Timestamp,
    ) -> Result<bool, AwsError> {
        let credential = &state.observation.credential;
        let json = serde_json::to_string(state)
            .map_err(|e| invalid("dynamodb:TransactWriteItems", e.to_string()))?;
        let mut item = state_key(credential);
        item.insert(VERSION.to_owned(), n(expected.map_or(1, |v| v + 1)));
        item.insert(STATE.to_owned(), s(json));
        item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at.unix()));
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = match expected {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            Some(version) => put
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", n(version)),
        };
        if expected.is_none() {
            put = put.expression_attribute_names("#pk", PARTITION_KEY);
        }
        let put = put
            .build()
            .map_err(|e| invalid("dynamodb:TransactWriteItems", e.to_string()))?;
        let active = state.is_open() || state.pending.is_some();
        let marker = if active {
            let mut marker = active_key(credential);
            marker.insert(
                CREDENTIAL.to_owned(),
                s(serde_json::to_string(credential).unwrap_or_default()),
            );
            marker.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at.unix()));
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(marker))
                        .build()
                        .map_err(|e| invalid("dynamodb:TransactWriteItems", e.to_string()))?,
                )
                .build()
        } else {
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(active_key(credential)))
                        .build()
                        .map_err(|e| invalid("dynamodb:TransactWriteItems", e.to_string()))?,
                )
                .build()
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(marker)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match cancellation_codes(&e) {
                Some(codes)
                    if codes.first().and_then(Option::as_deref) == Some(CONDITION_FAILED) =>
                {
                    debug!(credential = %credential, "state changed under us; re-reading");
                    Ok(false)
                }
                _ => Err(AwsError::from_sdk("dynamodb:TransactWriteItems", e)),
            },
        }
    }

    async fn active(&self) -> Result<Vec<Versioned>, AwsError> {
        let mut states = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :active")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":active", s(ACTIVE_PARTITION))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("dynamodb:Query", e))?;
            for marker in page.items() {
                let credential: Option<CredentialKey> = marker
                    .get(CREDENTIAL)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|json| serde_json::from_str(json).ok());
                if let Some(credential) = credential
                    && let Some(state) = self.load(&credential).await?
                {
                    states.push(state);
                }
            }
        }
        Ok(states)
    }
}

/// The history item sits beside the state item, in the same partition.
impl HistoryCache for DynamoStore {
    type Error = AwsError;

    async fn get(&self, credential: &CredentialKey) -> Result<Option<Enrichment>, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(history_key(credential)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:GetItem", e))?;
        let Some(json) = output
            .item
            .as_ref()
            .and_then(|item| item.get(HISTORY))
            .and_then(|v| v.as_s().ok())
        else {
            return Ok(None);
        };
        serde_json::from_str(json).map(Some).map_err(|e| {
            invalid(
                "dynamodb:GetItem",
                format!("history item does not decode: {e}"),
            )
        })
    }

    async fn put(
        &self,
        credential: &CredentialKey,
        enrichment: &Enrichment,
        expires_at: Timestamp,
    ) -> Result<(), AwsError> {
        let json = serde_json::to_string(enrichment)
            .map_err(|e| invalid("dynamodb:PutItem", e.to_string()))?;
        let mut item = history_key(credential);
        item.insert(HISTORY.to_owned(), s(json));
        item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at.unix()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:PutItem", e))?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct DynamoClaims {
    client: Client,
    table: String,
    now: fn() -> Timestamp,
}

impl DynamoClaims {
    pub fn new(client: Client, table: impl Into<String>, now: fn() -> Timestamp) -> Self {
        Self {
            client,
            table: table.into(),
            now,
        }
    }

    /// A new claim, or the holder's own unfinished one again (its earlier write may have landed unanswered).
    fn claim_put(
        &self,
        request: &ClaimRequest<'_>,
        expires_at: Timestamp,
    ) -> Result<TransactWriteItem, AwsError> {
        let mut item = claim_key(request.event_id);
        item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at.unix()));
        let put = Put::builder()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PARTITION_KEY);
        let put = if request.holder.is_empty() {
            put.condition_expression("attribute_not_exists(#pk)")
        } else {
            item.insert(HOLDER.to_owned(), s(request.holder));
            put.condition_expression("attribute_not_exists(#pk) OR #holder = :holder")
                .expression_attribute_names("#holder", HOLDER)
                .expression_attribute_values(":holder", s(request.holder))
        };
        let put = put
            .set_item(Some(item))
            .build()
            .map_err(|e| invalid("dynamodb:TransactWriteItems", e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Claims one chunk; a cancelled transaction names the ids already claimed, and the rest are tried again.
    async fn claim_chunk(
        &self,
        ids: &[ClaimRequest<'_>],
        expires_at: Timestamp,
    ) -> Result<Vec<bool>, AwsError> {
        let mut fresh = vec![true; ids.len()];
        loop {
            let pending: Vec<usize> = (0..ids.len()).filter(|i| fresh[*i]).collect();
            if pending.is_empty() {
                return Ok(fresh);
            }
            let items = pending
                .iter()
                .map(|i| self.claim_put(&ids[*i], expires_at))
                .collect::<Result<Vec<_>, _>>()?;
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(fresh),
                Err(e) => {
                    let codes = cancellation_codes(&e)
                        .ok_or_else(|| AwsError::from_sdk("dynamodb:TransactWriteItems", e))?;
                    let mut progressed = false;
                    for (i, code) in pending.iter().zip(codes) {
                        if code.as_deref() == Some(CONDITION_FAILED) {
                            fresh[*i] = false;
                            progressed = true;
                        }
                    }
                    if !progressed {
                        return Err(invalid(
                            "dynamodb:TransactWriteItems",
                            "claim transaction cancelled for a reason other than an existing claim",
                        ));
                    }
                }
            }
        }
    }
}

impl EventClaims for DynamoClaims {
    type Error = AwsError;

    async fn claim(&self, requests: &[ClaimRequest<'_>]) -> Result<Vec<bool>, AwsError> {
        let expires_at = (self.now)().plus_seconds(CLAIM_TTL_SECONDS);
        let mut fresh = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(MAX_TRANSACT_ITEMS) {
            fresh.extend(self.claim_chunk(chunk, expires_at).await?);
        }
        Ok(fresh)
    }

    /// Rewrites each claim without its holder; unconditional, as only the holder completes its claims.
    async fn complete(&self, event_ids: &[String]) -> Result<(), AwsError> {
        let expires_at = (self.now)().plus_seconds(CLAIM_TTL_SECONDS);
        let requests = event_ids.iter().map(|id| {
            let mut item = claim_key(id);
            item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at.unix()));
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map(|p| WriteRequest::builder().put_request(p).build())
        });
        self.batch_write(requests).await
    }

    async fn release(&self, event_ids: &[String]) -> Result<(), AwsError> {
        let requests = event_ids.iter().map(|id| {
            DeleteRequest::builder()
                .set_key(Some(claim_key(id)))
                .build()
                .map(|d| WriteRequest::builder().delete_request(d).build())
        });
        self.batch_write(requests).await
    }
}

impl DynamoClaims {
    /// BatchWriteItem in chunks of 25, re-sending what DynamoDB left unprocessed.
    async fn batch_write<E: std::fmt::Display>(
        &self,
        requests: impl Iterator<Item = Result<WriteRequest, E>>,
    ) -> Result<(), AwsError> {
        let requests: Vec<WriteRequest> = requests
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("dynamodb:BatchWriteItem", e.to_string()))?;
        for chunk in requests.chunks(MAX_BATCH_WRITE_ITEMS) {
            let mut pending = chunk.to_vec();
            for _ in 0..MAX_UNPROCESSED_ROUNDS {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("dynamodb:BatchWriteItem", e))?;
                pending = output
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
            }
            if !pending.is_empty() {
                return Err(AwsError {
                    operation: "dynamodb:BatchWriteItem",
                    message: format!("{} claims still unprocessed after retries", pending.len()),
                    retryable: true,
                });
            }
        }
        Ok(())
    }
}
