//! Shared HTTP plumbing: a loopback hyper server whose handlers may drop a connection with a TCP
//! reset, and a plain-HTTP client to the upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Error type carried by bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body of any origin: buffered or streamed from the other side.
pub(crate) type Body = BoxBody<Bytes, BoxError>;
/// The client used to reach an upstream over plain HTTP.
pub(crate) type HttpClient = Client<HttpConnector, Body>;

/// A buffered body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body received by a server or a client.
pub(crate) fn incoming(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An upstream base URL (`http://host:port`, no path) parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Upstream {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("upstream `{url}` is not a URL: {e}"))?;
        let scheme = uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
        if scheme != http::uri::Scheme::HTTP {
            anyhow::bail!("upstream `{url}`: only plain http:// is supported");
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("upstream `{url}` has no host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            anyhow::bail!("upstream `{url}` must not have a path");
        }
        Ok(Self { scheme, authority })
    }

    /// The upstream URI for a request path (and query).
    pub(crate) fn uri(&self, path_and_query: &str) -> anyhow::Result<http::Uri> {
        Ok(http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()?)
    }
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus `host`, which the
/// client sets for the upstream when absent.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers (and those named in `Connection`). `Transfer-Encoding` goes too:
/// the body is re-framed on the next hop.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Forwards a request to `upstream` as it is (minus hop-by-hop headers) and streams the response
/// back; an unreachable upstream is a 502.
pub(crate) async fn forward(
    client: &HttpClient,
    upstream: &Upstream,
    parts: http::request::Parts,
    body: Body,
) -> Response<Body> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = match upstream.uri(path) {
        Ok(uri) => uri,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    strip_hop_by_hop(request.headers_mut());
    // hyper's client does not wait for `100 Continue`; the body is sent at once anyway.
    request.headers_mut().remove(header::EXPECT);
    match client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, incoming(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream unreachable");
            plain(
                StatusCode::BAD_GATEWAY,
                &format!("testkit proxy: upstream: {e}"),
            )
        }
    }
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// What a handler does with a request.
pub(crate) enum Outcome {
    /// Send this response.
    Respond(Response<Body>),
    /// Send nothing: abort the connection with a TCP reset.
    Reset,
}

/// A request handler for [`LoopbackServer`].
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = Outcome> + Send;
}

/// An HTTP/1.1 server on 127.0.0.1 with an ephemeral port. Dropping it stops accepting and aborts
/// every open connection.
#[derive(Debug)]
pub(crate) struct LoopbackServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl LoopbackServer {
    pub(crate) async fn start<H: Handler>(name: &'static str, handler: H) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let handler = Arc::new(handler);
        let accept = tokio::spawn(accept_loop(name, listener, handler));
        tracing::debug!(server = name, %addr, "listening");
        Ok(Self { addr, accept })
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset by fault injection")]
struct ResetRequested;

async fn accept_loop<H: Handler>(name: &'static str, listener: TcpListener, handler: Arc<H>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(name, stream, peer, handler.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<H: Handler>(
    name: &'static str,
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: reset.clone(),
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let reset = reset.clone();
        async move {
            match handler.handle(request).await {
                Outcome::Respond(response) => Ok(response),
                Outcome::Reset => {
                    reset.store(true, Ordering::SeqCst);
                    Err(ResetRequested)
                }
            }
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(server = name, %peer, error = %e, "connection ended");
    }
}

/// A TCP stream that, when its handler asked for a reset, closes with `SO_LINGER` 0 so the peer
/// receives RST rather than an orderly FIN.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst)
            && let Err(e) = self.inner.set_zero_linger()
        {
            tracing::debug!(error = %e, "could not arm the connection reset");
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
