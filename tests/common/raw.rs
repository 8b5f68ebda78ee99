//! Calls whose path and body are raw bytes, whatever the service expects: for malformed bodies
//! and paths no service has.

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends `body` as the message of a unary call to `path` (which need not exist), on a new
/// connection, with one metadata entry if given.
pub async fn call(
    address: SocketAddr,
    path: &str,
    body: Vec<u8>,
    metadata: Option<(&'static str, String)>,
) -> Result<(), tonic::Status> {
    call_on(connect(address).await, path, body, metadata).await
}

/// A new connection to `address`.
async fn connect(address: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The same, on a channel of the caller's.
pub async fn call_on(
    channel: tonic::transport::Channel,
    path: &str,
    body: Vec<u8>,
    metadata: Option<(&'static str, String)>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    if let Some((key, value)) = metadata {
        request.metadata_mut().insert(key, value.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("a path");
    grpc.unary(request, path, RawCodec).await.map(drop)
}

/// Sends each of `messages` in turn in the request body of one call to `path`, as a
/// client-streaming call does, whatever the RPC takes.
pub async fn call_with_messages(
    address: SocketAddr,
    path: &str,
    messages: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(connect(address).await);
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(tokio_stream::iter(messages));
    let path = http::uri::PathAndQuery::try_from(path).expect("a path");
    grpc.client_streaming(request, path, RawCodec)
        .await
        .map(drop)
}

/// Sends raw bytes as a request body, whatever the RPC expects.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
