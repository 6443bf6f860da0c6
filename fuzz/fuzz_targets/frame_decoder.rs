//! Feeds arbitrary bytes to the frame decoder, in arbitrary chunks: it must never
//! panic, never reserve more than the maximum frame, and re-encode what it decodes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use remoting::codec::encode_frame;
use remoting::FrameCodec;
use tokio_util::codec::Decoder;

const MAX_FRAME_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = chunk.max(1) as usize;
    let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(cmd)) => {
                    let frame = encode_frame(&cmd).expect("a decoded command re-encodes");
                    let mut again = BytesMut::from(&frame[..]);
                    let back = FrameCodec::new(usize::MAX).decode(&mut again);
                    assert_eq!(back.expect("re-decodes").expect("whole"), cmd);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 2 * (MAX_FRAME_BYTES + 8) + 4096);
    }
});
