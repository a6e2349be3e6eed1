//! The gRPC codec of the mesh's services: prost messages, with small
//! starting buffers.
//!
//! tonic gives every stream an 8 KiB decode buffer and an 8 KiB encode
//! buffer up front. A controller holds one discovery stream per sidecar
//! and most of them are quiet for hours, so those 16 KiB were about 40 % of
//! what a stream cost it (heap profile of `mycel-bench cp-scale`,
//! docs/benchmarks.md, "controller memory per stream"). Discovery and
//! identity messages are mostly far smaller; a buffer still grows to the
//! largest message it meets, so only the idle cost changes.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// What each stream's encode and decode buffers start at.
pub const START_BUFFER_BYTES: usize = 512;
/// tonic's own: an encoder yields to the transport once this much is
/// buffered.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with [`START_BUFFER_BYTES`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(START_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
