// The handler future nests deeply (SDK calls inside the pipeline inside the runtime).
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use tokenwatch_lambda::{App, Config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_lookup(|name| std::env::var(name).ok()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration; the function cannot start");
    })?;
    let app = App::from_environment(config).await;
    run(service_fn(|event: LambdaEvent<Value>| app.handle(event))).await
}
