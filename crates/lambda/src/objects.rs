//! Reading S3 log files: the port the handler uses, so tests can hand it bytes.

use std::future::Future;

use tokenwatch_aws::{AwsError, S3Objects};
use tokio::io::AsyncRead;

pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin + 'static>;

pub trait ObjectSource: Send + Sync {
    fn open(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<ObjectReader, AwsError>> + Send;
}

impl ObjectSource for S3Objects {
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, AwsError> {
        Ok(Box::new(S3Objects::open(self, bucket, key).await?))
    }
}
