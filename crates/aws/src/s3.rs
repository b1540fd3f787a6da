//! Streaming reads of CloudTrail log files from S3: bytes flow from the network through the decompressor
//! to the record splitter, so a file of any size never sits in memory. Also the listings a backfill
//! walks the trail's folders with (one folder level at a time, never the whole bucket).

use aws_sdk_s3::Client;
use tokio::io::AsyncRead;

use crate::AwsError;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct S3Objects {
    client: Client,
}

impl S3Objects {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Builds the client from shared configuration: path-style addressing when the endpoint is custom.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(crate::sdk::uses_custom_endpoint(config))
            .build();
        Self::new(Client::from_conf(s3))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The folders directly under `prefix` (common prefixes with delimiter `/`), all pages.
    pub async fn list_folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, AwsError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut folders = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("s3:ListObjectsV2", e))?;
            folders.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        Ok(folders)
    }

    /// Every object under `prefix` (one day's folder), all pages, with its size.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectInfo>, AwsError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("s3:ListObjectsV2", e))?;
            objects.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                })
            }));
        }
        Ok(objects)
    }

    /// The object's body as an async stream.
    pub async fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, AwsError> {
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
                let mut error = AwsError::from_sdk("s3:GetObject", e);
                error.retryable |= !is_gone(code.as_deref());
                error
            })?;
        Ok(object.body.into_async_read())
    }
}

/// Whether a GetObject error means the object will never be readable. Anything else (a denied permission,
/// a KMS key the function may not use) can be fixed, so the message should wait for that, and end in the
/// dead-letter queue if it is not, rather than be dropped.
fn is_gone(code: Option<&str>) -> bool {
    matches!(code, Some("NoSuchKey" | "NoSuchBucket"))
}

#[cfg(test)]
mod tests {
    use super::is_gone;

    #[test]
    fn only_a_missing_object_is_given_up_on() {
        assert!(is_gone(Some("NoSuchKey")));
        assert!(is_gone(Some("NoSuchBucket")));
        for code in [
            Some("AccessDenied"),
            Some("KMS.AccessDeniedException"),
            Some("SlowDown"),
            None,
        ] {
            assert!(!is_gone(code), "{code:?}");
        }
    }
}
