//! Streaming reads of CloudTrail log files from S3: bytes flow from the network through the decompressor
//! to the record splitter, so a file of any size never sits in memory.

use aws_sdk_s3::Client;
use tokio::io::AsyncRead;

use crate::AwsError;

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
            .map_err(|e| AwsError::from_sdk("s3:GetObject", e))?;
        Ok(object.body.into_async_read())
    }
}
