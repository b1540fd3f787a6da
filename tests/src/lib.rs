//! End-to-end support: resources created from `infra/template.yaml` in a local emulator, the real Lambda
//! binary under `cargo lambda watch`, and the plumbing between them that AWS would provide (the SQS event
//! source mapping, the EventBridge rule, the schedule).

pub mod infra;
pub mod lambda;
pub mod plumbing;
