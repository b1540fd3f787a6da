//! An RPC v2 CBOR → awsJson 1.0 translating proxy, so the current CloudWatch SDK can talk to moto.
//!
//! moto has no Smithy RPC v2 CBOR support (moto issue #9195) while `aws-sdk-cloudwatch` speaks only
//! that. moto does accept CloudWatch in awsJson 1.0 (its service model lists `smithy-rpc-v2-cbor`,
//! `json` and `query`, and it picks the parser from the request's `Content-Type`), so the bridge
//! rewrites each request:
//!
//! | SDK (rpcv2Cbor)                                          | moto (awsJson 1.0)                                        |
//! |----------------------------------------------------------|-----------------------------------------------------------|
//! | `POST /service/GraniteServiceVersion20100801/operation/Op` | `POST /` with `X-Amz-Target: GraniteServiceVersion20100801.Op` |
//! | `Content-Type: application/cbor`, `smithy-protocol: rpc-v2-cbor` | `Content-Type: application/x-amz-json-1.0`          |
//! | CBOR body (maybe gzip, `Content-Encoding: gzip`)          | JSON body                                                 |
//!
//! and each response back (status kept, JSON → CBOR with [`crate::cbor::cloudwatch_hint`],
//! `smithy-protocol: rpc-v2-cbor`, `x-amzn-query-error` and `x-amzn-requestid` passed through).
//! `Authorization` and `X-Amz-Date` are forwarded unchanged: moto reads the service from the
//! credential scope and does not verify signatures.
//!
//! Requests that are not RPC v2 (awsJson 1.0 with `X-Amz-Target`, or awsQuery forms, as boto3 and
//! the AWS CLI send to CloudWatch) are forwarded untouched, so the bridge can stand as the
//! CloudWatch endpoint for any client.

use std::io::Read as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::cbor::{self, Hints};
use crate::net::{self as h, Body, Handler, HttpClient, LoopbackServer, Outcome, Upstream};

/// `Content-Type` of RPC v2 CBOR bodies.
pub const CBOR_CONTENT_TYPE: &str = "application/cbor";
/// `Content-Type` of awsJson 1.0 bodies.
pub const AWS_JSON_1_0: &str = "application/x-amz-json-1.0";
/// The header that marks an RPC v2 CBOR message.
pub const SMITHY_PROTOCOL: &str = "smithy-protocol";
/// Its value.
pub const RPC_V2_CBOR: &str = "rpc-v2-cbor";

/// Request headers that describe the CBOR body or this hop, replaced rather than forwarded.
const REPLACED_REQUEST_HEADERS: [&str; 7] = [
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "accept",
    "smithy-protocol",
    "x-amz-target",
];

/// A CloudWatch RPC v2 CBOR ⇄ awsJson 1.0 bridge on 127.0.0.1, in front of moto.
#[derive(Debug)]
pub struct CloudWatchBridge {
    server: LoopbackServer,
}

impl CloudWatchBridge {
    /// Starts the bridge, forwarding to `upstream` (moto's endpoint, `http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> anyhow::Result<CloudWatchBridge> {
        let handler = Bridge {
            upstream: Upstream::parse(upstream)?,
            client: h::client(),
            hints: cbor::cloudwatch_hint,
        };
        Ok(CloudWatchBridge {
            server: LoopbackServer::start("cloudwatch-bridge", handler).await?,
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for a CloudWatch client.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }
}

struct Bridge {
    upstream: Upstream,
    client: HttpClient,
    hints: Hints,
}

impl Handler for Bridge {
    async fn handle(&self, request: Request<Incoming>) -> Outcome {
        Outcome::Respond(match self.translate(request).await {
            Ok(response) => response,
            Err(failure) => {
                tracing::warn!(code = failure.code, message = %failure.message, "bridge failure");
                cbor_error(failure.status, failure.code, &failure.message)
            }
        })
    }
}

/// A failure of the bridge itself, answered as an RPC v2 CBOR error.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn upstream(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            code: "BridgeUpstreamFailure",
            message: message.into(),
        }
    }
}

impl Bridge {
    async fn translate(&self, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
        let (parts, body) = request.into_parts();
        let Some((service, operation)) = parse_rpc_path(parts.uri.path()) else {
            // awsJson 1.0 or awsQuery (boto3, the AWS CLI): moto speaks those itself.
            return Ok(h::forward(&self.client, &self.upstream, parts, h::incoming(body)).await);
        };
        if parts.method != Method::POST {
            return Err(Failure::client(
                "UnknownOperationException",
                "RPC v2 requests are POST",
            ));
        }
        let body = body
            .collect()
            .await
            .map_err(|e| {
                Failure::client(
                    "SerializationException",
                    format!("reading the request body: {e}"),
                )
            })?
            .to_bytes();
        let body = decode_content_encoding(&parts.headers, body)?;
        let json = cbor::request_cbor_to_json(&body)
            .map_err(|e| Failure::client("SerializationException", e.to_string()))?;
        tracing::debug!(%service, %operation, body = %String::from_utf8_lossy(&json), "bridge → upstream");

        let mut upstream_request = Request::builder().method(Method::POST).uri(
            self.upstream
                .uri("/")
                .map_err(|e| Failure::upstream(e.to_string()))?,
        );
        if let Some(headers) = upstream_request.headers_mut() {
            for (name, value) in &parts.headers {
                if !REPLACED_REQUEST_HEADERS.contains(&name.as_str()) {
                    headers.append(name, value.clone());
                }
            }
            h::strip_hop_by_hop(headers);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(AWS_JSON_1_0));
            let target = HeaderValue::from_str(&format!("{service}.{operation}"))
                .map_err(|e| Failure::client("SerializationException", e.to_string()))?;
            headers.insert("x-amz-target", target);
        }
        let upstream_request = upstream_request
            .body(h::full(json))
            .map_err(|e| Failure::upstream(e.to_string()))?;

        let response = self.client.request(upstream_request).await.map_err(|e| {
            Failure::upstream(format!("forwarding to {}: {e}", self.upstream_display()))
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Failure::upstream(format!("reading the upstream response: {e}")))?
            .to_bytes();
        tracing::debug!(%operation, status = %parts.status, body = %String::from_utf8_lossy(&body), "upstream → bridge");
        Ok(self.translate_response(parts.status, &parts.headers, &body))
    }

    fn upstream_display(&self) -> String {
        self.upstream
            .uri("/")
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn translate_response(
        &self,
        status: StatusCode,
        upstream_headers: &HeaderMap,
        body: &Bytes,
    ) -> Response<Body> {
        let cbor_body = match cbor::response_json_to_cbor(body, self.hints) {
            Ok(cbor_body) => cbor_body,
            Err(e) if status.is_success() => {
                return cbor_error(
                    StatusCode::BAD_GATEWAY,
                    "BridgeUpstreamFailure",
                    &format!("untranslatable upstream response: {e}"),
                );
            }
            // An error page that is not JSON (moto answers an unimplemented operation with an HTML 500):
            // keep the status, carry the text as the message.
            Err(_) => {
                let code = if status.is_server_error() {
                    "InternalFailure"
                } else {
                    "UnknownError"
                };
                let text = String::from_utf8_lossy(body);
                return with_passthrough(cbor_error(status, code, text.trim()), upstream_headers);
            }
        };
        let mut response = Response::new(h::full(cbor_body));
        *response.status_mut() = status;
        set_cbor_headers(response.headers_mut());
        with_passthrough(response, upstream_headers)
    }
}

/// `/service/{Service}/operation/{Operation}` → (Service, Operation).
pub(crate) fn parse_rpc_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/service/")?;
    let (service, rest) = rest.split_once('/')?;
    let operation = rest.strip_prefix("operation/")?;
    let valid =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (valid(service) && valid(operation)).then_some((service, operation))
}

fn decode_content_encoding(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Failure> {
    let Some(encoding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let encoding = encoding
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .read_to_end(&mut decoded)
                .map_err(|e| Failure::client("SerializationException", format!("gunzip: {e}")))?;
            Ok(decoded.into())
        }
        other => Err(Failure::client(
            "SerializationException",
            format!("unsupported Content-Encoding {other}"),
        )),
    }
}

fn set_cbor_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CBOR_CONTENT_TYPE),
    );
    headers.insert(SMITHY_PROTOCOL, HeaderValue::from_static(RPC_V2_CBOR));
}

/// Copies the upstream headers that mean the same in either protocol: request ids and the
/// awsQuery-compatible error code (`x-amzn-query-error: Code;Sender`), which the SDK prefers to
/// `__type` when present.
fn with_passthrough(mut response: Response<Body>, upstream: &HeaderMap) -> Response<Body> {
    for name in [
        "x-amzn-requestid",
        "x-amz-request-id",
        "x-amzn-query-error",
        "date",
    ] {
        if let Some(value) = upstream.get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// An RPC v2 CBOR error response: `{"__type": code, "message": message}`.
pub(crate) fn cbor_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let value = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("__type".into()),
            ciborium::Value::Text(code.into()),
        ),
        (
            ciborium::Value::Text("message".into()),
            ciborium::Value::Text(message.into()),
        ),
    ]);
    let mut response = Response::new(h::full(cbor::encode_cbor(&value)));
    *response.status_mut() = status;
    set_cbor_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;

    use super::*;

    #[test]
    fn gzip_request_bodies_are_inflated_and_unknown_encodings_refused() {
        const CBOR: [u8; 4] = [0xa1, 0x61, 0x61, 0x01]; // {"a": 1}
        let cbor = CBOR;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&cbor).unwrap();
        let gzipped = Bytes::from(encoder.finish().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let decoded = decode_content_encoding(&headers, gzipped.clone())
            .ok()
            .unwrap();
        assert_eq!(decoded.as_ref(), cbor);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(decode_content_encoding(&headers, gzipped).is_err());
        assert_eq!(
            decode_content_encoding(&HeaderMap::new(), Bytes::from_static(&CBOR))
                .ok()
                .unwrap()
                .as_ref(),
            cbor
        );
    }

    #[test]
    fn rpc_paths() {
        assert_eq!(
            parse_rpc_path("/service/GraniteServiceVersion20100801/operation/PutMetricData"),
            Some(("GraniteServiceVersion20100801", "PutMetricData"))
        );
        assert_eq!(parse_rpc_path("/service/X/operation/"), None);
        assert_eq!(parse_rpc_path("/service/X/operation/A/B"), None);
        assert_eq!(parse_rpc_path("/"), None);
    }
}
