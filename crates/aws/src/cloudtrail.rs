//! A key's CloudTrail event history with `LookupEvents` (attribute `AccessKeyId`), in the Region the key's
//! calls were made in: pages read through the process-wide rate limiter of that Region, at most
//! [`MAX_LOOKUP_PAGES`], never past the caller's deadline, and summarized by the core's pure
//! [`HistoryBuilder`]. Throttling is retried by the SDK's standard retry
//! policy; what is still throttled, denied or late comes back as a [`LookupError`] the alert explains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_sdk_cloudtrail::Client;
use aws_sdk_cloudtrail::config::Region;
use aws_sdk_cloudtrail::primitives::DateTime;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokenwatch_core::history::{
    CredentialHistory, HistoryBuilder, HistoryQuery, KeyHistory, LOOKUP_EVENTS_PAGE_SIZE,
    LOOKUP_EVENTS_PER_SECOND, LookupError, MAX_LOOKUP_PAGES, Unavailable,
};
use tracing::{debug, info};

use crate::ratelimit::TokenBucket;

/// Error codes that mean the caller may not look events up.
const DENIED_CODES: [&str; 3] = [
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
];

/// One token bucket per Region: `LookupEvents`' limit is per account and Region, so every lookup in this
/// process for a Region shares that Region's bucket.
#[derive(Debug)]
pub struct RegionLimiters {
    per_second: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Arc<TokenBucket>>>,
}

impl RegionLimiters {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// The process-wide limiters at `LookupEvents`' rate.
    pub fn lookup_events() -> Arc<Self> {
        static LIMITERS: OnceLock<Arc<RegionLimiters>> = OnceLock::new();
        Arc::clone(LIMITERS.get_or_init(|| {
            Arc::new(RegionLimiters::new(
                LOOKUP_EVENTS_PER_SECOND,
                LOOKUP_EVENTS_PER_SECOND,
            ))
        }))
    }

    pub fn for_region(&self, region: &str) -> Arc<TokenBucket> {
        // A poisoned map only means a caller panicked while inserting; the buckets in it are fine.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            buckets
                .entry(region.to_owned())
                .or_insert_with(|| Arc::new(TokenBucket::new(self.per_second, self.burst))),
        )
    }
}

#[derive(Debug, Clone)]
pub struct CloudTrailHistory {
    client: Client,
    limiters: Arc<RegionLimiters>,
    max_pages: usize,
}

impl CloudTrailHistory {
    /// Lookups through the process-wide limiters.
    pub fn new(client: Client) -> Self {
        Self::with_limiters(client, RegionLimiters::lookup_events())
    }

    /// Lookups through limiters of the caller's (tests give each their own).
    pub fn with_limiters(client: Client, limiters: Arc<RegionLimiters>) -> Self {
        Self {
            client,
            limiters,
            max_pages: MAX_LOOKUP_PAGES,
        }
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(config))
    }

    /// The Region a query goes to: its own, else the client's.
    fn region_of(&self, query: &HistoryQuery) -> String {
        query
            .region
            .clone()
            .or_else(|| self.client.config().region().map(ToString::to_string))
            .unwrap_or_default()
    }
}

/// What a failed request means for the alert.
fn classify<E, R>(error: &SdkError<E, R>) -> LookupError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = error.code();
    let message = match code {
        Some(code) => format!("{code}: {}", error.message().unwrap_or("no message")),
        None => aws_smithy_types::error::display::DisplayErrorContext(error).to_string(),
    };
    let reason = match (error, code) {
        (_, Some(code)) if DENIED_CODES.contains(&code) => Unavailable::Denied,
        (_, Some(code)) if code.contains("Throttl") => Unavailable::Throttled,
        (SdkError::TimeoutError(_), _) => Unavailable::TimedOut,
        _ => Unavailable::Failed,
    };
    LookupError::new(reason, message)
}

/// With some pages read, the history so far (marked incomplete); with none, the error.
fn partial(
    mut builder: HistoryBuilder,
    pages: usize,
    error: LookupError,
) -> Result<KeyHistory, LookupError> {
    if pages == 0 {
        return Err(error);
    }
    builder.incomplete(format!("stopped after {pages} pages: {error}"));
    Ok(builder.finish())
}

impl CredentialHistory for CloudTrailHistory {
    async fn lookup(
        &self,
        query: &HistoryQuery,
        deadline: Instant,
    ) -> Result<KeyHistory, LookupError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let key = &query.access_key_id;
        let attribute = LookupAttribute::builder()
            .attribute_key(LookupAttributeKey::AccessKeyId)
            .attribute_value(key)
            .build()
            .map_err(|e| LookupError::new(Unavailable::Failed, e.to_string()))?;
        let region = self.region_of(query);
        let limiter = self.limiters.for_region(&region);
        let mut builder = HistoryBuilder::new(query);
        let mut next_token: Option<String> = None;
        let mut pages = 0;
        loop {
            if pages == self.max_pages {
                builder.incomplete(format!(
                    "stopped after {pages} pages ({} events), the most read per lookup",
                    builder.events()
                ));
                break;
            }
            if let Err(late) = limiter.acquire(deadline).await {
                let error = LookupError::new(Unavailable::TimedOut, late.to_string());
                return partial(builder, pages, error);
            }
            let request = self
                .client
                .lookup_events()
                .lookup_attributes(attribute.clone())
                .start_time(DateTime::from_secs(query.start.unix()))
                .end_time(DateTime::from_secs(query.end.unix()))
                .max_results(LOOKUP_EVENTS_PAGE_SIZE)
                .set_next_token(next_token.take())
                .customize()
                .config_override(
                    aws_sdk_cloudtrail::config::Builder::default()
                        .region(Region::new(region.clone())),
                )
                .send();
            let output = match tokio::time::timeout_at(deadline, request).await {
                Err(_) => {
                    let error = LookupError::new(
                        Unavailable::TimedOut,
                        format!("no answer to page {} before the deadline", pages + 1),
                    );
                    return partial(builder, pages, error);
                }
                Ok(Err(e)) => return partial(builder, pages, classify(&e)),
                Ok(Ok(output)) => output,
            };
            pages += 1;
            for event in output.events() {
                if let Some(json) = event.cloud_trail_event() {
                    builder.add(json);
                }
            }
            debug!(access_key_id = %key, region = %region, page = pages, events = output.events().len(), "LookupEvents page");
            match output.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        let history = builder.finish();
        info!(
            access_key_id = %key,
            region = %region,
            pages,
            events = history.events,
            complete = history.incomplete.is_none(),
            "key history looked up"
        );
        Ok(history)
    }
}
