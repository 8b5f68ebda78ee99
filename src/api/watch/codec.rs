//! WatchHistory's codec: its responses are entries encoded once, sent to the client as they are.
//!
//! An offering's shared reader ([`super::hub`]) hands each new entry to every stream that follows
//! the offering: 100 streams of an offering used to cost 100 clones and 100 protobuf encodings of
//! each entry. Here the reader encodes it once ([`EncodedEntry::new`]) and every stream sends the
//! same bytes: a stream's cost per entry is a reference count and a copy into its frame. The
//! bytes on the wire are the protobuf encoding of the HistoryEntry, as prost's codec would have
//! written them, so clients (generated, grpcurl) see no difference.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::proto;

/// A HistoryEntry in its protobuf encoding; cloning it shares the bytes.
#[derive(Clone, Debug)]
pub struct EncodedEntry(Bytes);

impl EncodedEntry {
    /// The only way to make one, so that what [`PassThrough`] sends is a HistoryEntry.
    pub fn new(entry: &proto::HistoryEntry) -> Self {
        Self(entry.encode_to_vec().into())
    }

    #[cfg(test)]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// Decodes the WatchHistoryRequest as the generated server would; encodes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedEntries;

impl Codec for EncodedEntries {
    type Encode = EncodedEntry;
    type Decode = proto::WatchHistoryRequest;
    type Encoder = PassThrough;
    type Decoder = ProstDecoder<proto::WatchHistoryRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        PassThrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes an entry's bytes into the stream's frame (tonic adds the gRPC message header).
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough;

impl Encoder for PassThrough {
    type Item = EncodedEntry;
    type Error = Status;

    fn encode(&mut self, entry: EncodedEntry, frame: &mut EncodeBuf<'_>) -> Result<(), Status> {
        frame.put_slice(&entry.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_entry_is_what_prost_writes_and_decodes_back() {
        let entry = proto::HistoryEntry {
            offering_id: "deal".into(),
            sequence: 7,
            investor_id: "alice".into(),
            units_delta: 12,
            request_id: "r-7".into(),
            ..Default::default()
        };
        let encoded = EncodedEntry::new(&entry);
        assert_eq!(encoded.bytes().as_ref(), entry.encode_to_vec().as_slice());
        assert_eq!(
            proto::HistoryEntry::decode(encoded.bytes().clone()).unwrap(),
            entry
        );
    }
}
