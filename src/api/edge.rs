//! The HTTP/2 edge of the server, in front of every service: refuses over-size header blocks
//! with a gRPC status instead of an HTTP error, and gives an ErrorInfo to every status that tonic
//! made itself (a body that does not decode, an over-size message, an unknown method), so that
//! the promise "every error carries a google.rpc.ErrorInfo" holds for them too; and refuses a
//! call of a one-message RPC whose body carries a second message, which tonic would drop unread.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use super::auth::{method_name, service_name};
use super::error::{ApiError, ERROR_DOMAIN};
use crate::telemetry::metrics::record_refusal;

/// Header bytes (names and values) one call may send. gRPC metadata is small: a bearer token, a
/// trace context, a few ids. HTTP/2 itself accepts up to HTTP2_HEADER_LIST_BYTES_MAX, so that a
/// block between the two gets this gRPC refusal rather than a bare HTTP 431.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// What HTTP/2 accepts before it answers 431 on its own (announced in SETTINGS).
pub const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 256 * 1024;
/// A request message larger than this is refused before it is read: every subledger request
/// is a few hundred bytes.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// Characters of a request's path a log line shows: every path subledger serves is shorter, and
/// a caller cannot make a line as long as the path it invents.
const PATH_LOG_CHARS_MAX: usize = 128;

/// `path`, cut to PATH_LOG_CHARS_MAX characters for a log line.
fn path_for_log(path: &str) -> &str {
    match path.char_indices().nth(PATH_LOG_CHARS_MAX) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}

#[derive(Clone, Copy, Default)]
pub struct EdgeLayer;

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService { inner }
    }
}

#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for EdgeService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let method = method_name(path);
        let logged_path = path_for_log(path).to_owned();
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > HEADER_BYTES_MAX {
            let status = Status::from(ApiError::LimitReached {
                reason: "HEADERS_TOO_LARGE",
                limit: HEADER_BYTES_MAX as u64,
                message: format!(
                    "the call sent {header_bytes} bytes of headers; at most {HEADER_BYTES_MAX} are accepted"
                ),
            });
            tracing::info!(method, path = logged_path, code = ?status.code(), message = status.message(), "call refused");
            record_refusal(method, status.code());
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let request = if takes_one_message(path) {
            request.map(|body| Body::new(OneMessage::new(body, method)))
        } else {
            request
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(with_error_info(response, method, &logged_path))
        })
    }
}

/// A trailers-only error response without details is one tonic made before any handler ran:
/// give it the ErrorInfo every subledger status carries, and the code that says whose fault it is.
fn with_error_info(response: Response<Body>, method: &'static str, path: &str) -> Response<Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let (code, reason) = match status.code() {
        Code::Ok => return response,
        // tonic answers INTERNAL for a request body it cannot decode (subledger's own INTERNAL
        // statuses all carry details): that is the caller's doing.
        Code::Internal => (Code::InvalidArgument, "MALFORMED_REQUEST"),
        // tonic's answer to a message over REQUEST_BYTES_MAX.
        Code::OutOfRange => (Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        Code::Unimplemented => (Code::Unimplemented, "UNIMPLEMENTED"),
        Code::DeadlineExceeded => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        Code::Cancelled => (Code::Cancelled, "CANCELLED"),
        other => (other, "UNKNOWN"),
    };
    let mut metadata = HashMap::new();
    if code == Code::ResourceExhausted {
        metadata.insert("limit".to_owned(), REQUEST_BYTES_MAX.to_string());
    }
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    let status = Status::with_error_details(code, status.message(), details);
    tracing::info!(method, path, code = ?status.code(), message = status.message(), reason, "call refused");
    record_refusal(method, status.code());
    status.into_http()
}

/// Whether the RPC at `path` takes exactly one request message: every subledger and health RPC
/// (reflection's stream is the one that takes many).
fn takes_one_message(path: &str) -> bool {
    let service = service_name(path);
    service == crate::proto::SERVICE_NAME || service == "grpc.health.v1.Health"
}

/// A one-message RPC's request body, followed through its gRPC framing (a flag byte, a 4-byte
/// length, the message): a second message is refused with INVALID_ARGUMENT MALFORMED_REQUEST
/// before any handler runs, instead of being dropped unread as tonic would.
struct OneMessage {
    inner: Body,
    method: &'static str,
    framing: Framing,
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// Reading the first message's 5-byte prefix.
    Prefix { read: usize, bytes: [u8; 5] },
    /// Bytes of the first message still to come.
    Message { left: u64 },
    /// The first message is complete: any further byte starts a second.
    Complete,
}

impl Framing {
    fn new() -> Self {
        Self::Prefix {
            read: 0,
            bytes: [0; 5],
        }
    }

    /// Follows `data`; Err if it goes past the first message.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), ()> {
        while !data.is_empty() {
            match self {
                Self::Prefix { read, bytes } => {
                    let take = (5 - *read).min(data.len());
                    bytes[*read..*read + take].copy_from_slice(&data[..take]);
                    *read += take;
                    data = &data[take..];
                    if *read == 5 {
                        let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                        *self = match length {
                            0 => Self::Complete,
                            length => Self::Message {
                                left: u64::from(length),
                            },
                        };
                    }
                }
                Self::Message { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        *self = Self::Complete;
                    }
                }
                Self::Complete => return Err(()),
            }
        }
        Ok(())
    }
}

impl OneMessage {
    fn new(inner: Body, method: &'static str) -> Self {
        Self {
            inner,
            method,
            framing: Framing::new(),
        }
    }
}

impl http_body::Body for OneMessage {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && this.framing.follow(data).is_err()
        {
            let status = Status::from(ApiError::MalformedRequest(
                "the request carries more than one message; this RPC takes exactly one".into(),
            ));
            tracing::info!(method = this.method, code = ?status.code(), message = status.message(), "call refused");
            record_refusal(this.method, status.code());
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[test]
    fn one_message_in_any_chunking_is_followed_to_its_end() {
        let body = framed(b"hello");
        for split in 0..=body.len() {
            let mut framing = Framing::new();
            framing.follow(&body[..split]).unwrap();
            framing.follow(&body[split..]).unwrap();
            assert_eq!(framing, Framing::Complete, "split at {split}");
        }
        let mut empty = Framing::new();
        empty.follow(&framed(b"")).unwrap();
        assert_eq!(empty, Framing::Complete);
    }

    #[test]
    fn a_second_message_is_refused_wherever_it_starts() {
        let mut two = framed(b"first");
        two.extend(framed(b"second"));
        for split in 0..=two.len() {
            let mut framing = Framing::new();
            let first = framing.follow(&two[..split]);
            let second = framing.follow(&two[split..]);
            assert!(first.is_err() || second.is_err(), "split at {split}");
        }
    }
}
