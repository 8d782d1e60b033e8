//! The MessagePack encoding of a shared frame (docs/protocol.md section 2.1), computed once per
//! frame from its JSON and cached in [`SLOT_MSGPACK`]; the WebSocket binary frames built on it
//! are cached in [`SLOT_WS_BINARY`], [`SLOT_WS_BINARY_DEFLATE_15`] and
//! [`SLOT_WS_BINARY_DEFLATE_9`].

use bytes::Bytes;
use kilat_protocol::{EncodingSlot, SharedFrame};

/// Encoding slot of a frame as MessagePack values (no transport framing).
pub const SLOT_MSGPACK: EncodingSlot = EncodingSlot(3);
/// Encoding slot of a plain WebSocket binary frame carrying [`SLOT_MSGPACK`].
pub const SLOT_WS_BINARY: EncodingSlot = EncodingSlot(4);
/// Encoding slot of that binary frame compressed with a 15-bit window.
pub const SLOT_WS_BINARY_DEFLATE_15: EncodingSlot = EncodingSlot(5);
/// Encoding slot of that binary frame compressed with a 9-bit window.
pub const SLOT_WS_BINARY_DEFLATE_9: EncodingSlot = EncodingSlot(6);

/// The frame as MessagePack, transcoded from its JSON the first time any connection asks.
///
/// The JSON of a shared frame is always the server's own output, so the transcoding cannot
/// fail; if it ever did, the frame would go out empty and the failure is logged.
pub fn msgpack(frame: &SharedFrame) -> Bytes {
    frame.encoded(
        SLOT_MSGPACK,
        |json| match kilat_protocol::msgpack::json_to_msgpack(json) {
            Ok(packed) => Bytes::from(packed),
            Err(error) => {
                tracing::error!(%error, "a server frame could not be transcoded to MessagePack");
                Bytes::new()
            }
        },
    )
}
