//! The decompression stage of a layer download. The compressed chunks are inflated on a thread
//! of their own into a few reused buffers, which the tar applier reads on another thread: so
//! inflating, hashing the tar stream and writing the files use two cores, not one.
//!
//! The chunks are read in place (no copy into a read buffer), the decoder chosen by the media type
//! (whose magic bytes the ingest checks). The gzip CRC and size trailer and zstd's frame checks
//! stay with the decoders: a damaged stream is an error even when its data would apply.

use crate::media::LayerEncoding;
use bytes::{Buf, Bytes};
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{self, Receiver as StdReceiver, Sender, SyncSender};
use tokio::sync::mpsc::Receiver;

/// Size of one decoded buffer (fits the caches between the two threads).
const DECODED_CHUNK: usize = 256 << 10;
/// Decoded buffers queued between the threads.
const QUEUED_CHUNKS: usize = 6;

/// A reader over the downloaded chunks, borrowing them in place.
pub struct ChunkReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    /// Reads the chunks arriving on `rx` until it is closed.
    pub fn new(rx: Receiver<Bytes>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amt: usize) {
        self.current.advance(amt);
    }
}

/// A decoded buffer: `data[..len]` is the content.
struct Decoded {
    data: Vec<u8>,
    len: usize,
}

/// The applier's side: reads the decoded buffers in order and hands each one back for reuse.
pub struct DecodedReader {
    rx: StdReceiver<io::Result<Decoded>>,
    recycle: Sender<Vec<u8>>,
    current: Option<Decoded>,
    pos: usize,
}

impl Read for DecodedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                if self.pos < chunk.len {
                    let n = buf.len().min(chunk.len - self.pos);
                    buf[..n].copy_from_slice(&chunk.data[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if let Some(done) = self.current.take() {
                // The decoder may have finished already; then the buffer is simply dropped.
                let _ = self.recycle.send(done.data);
            }
            self.pos = 0;
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = Some(chunk),
                Ok(Err(e)) => return Err(io::Error::new(e.kind(), e.to_string())),
                // The decoder ended: after its last buffer (or an error it already sent).
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
    }
}

/// Decodes `input` (the downloaded chunks, or a blob file) on a scoped thread while `consume`
/// reads the decoded stream on this one.
/// Returns the decoder's result (an error if the compressed stream is damaged or truncated;
/// `Ok` also when `consume` stopped reading early) and `consume`'s.
pub fn decode_while<T>(
    encoding: LayerEncoding,
    input: impl BufRead + Send,
    consume: impl FnOnce(&mut DecodedReader) -> T,
) -> (io::Result<()>, T) {
    let (tx, rx) = mpsc::sync_channel(QUEUED_CHUNKS);
    let (recycle, recycled) = mpsc::channel();
    let mut reader = DecodedReader {
        rx,
        recycle,
        current: None,
        pos: 0,
    };
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("layer-decode".into())
            .spawn_scoped(scope, move || decode(encoding, input, &tx, &recycled))
            .map_err(|e| io::Error::new(e.kind(), format!("start the decoder thread: {e}")));
        let consumed = consume(&mut reader);
        // Unblocks a decoder still sending when `consume` stopped early.
        drop(reader);
        let decoded = decoder.and_then(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the decoder thread panicked")))
        });
        (decoded, consumed)
    })
}

/// The decoder thread: fills buffers (reused from `recycled`) from the decoder and sends them.
fn decode(
    encoding: LayerEncoding,
    mut input: impl BufRead,
    tx: &SyncSender<io::Result<Decoded>>,
    recycled: &StdReceiver<Vec<u8>>,
) -> io::Result<()> {
    let result = {
        let mut decoder: Box<dyn Read + '_> = match encoding {
            LayerEncoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut input)),
            LayerEncoding::Zstd => match zstd::stream::read::Decoder::with_buffer(&mut input) {
                Ok(d) => Box::new(d),
                Err(e) => return send_error(tx, e),
            },
            LayerEncoding::Plain => Box::new(&mut input),
        };
        pump(&mut *decoder, tx, recycled)
    };
    match result {
        Ok(Pumped::End) => {
            // Bytes after the last frame are ignored, as before; a download must not block.
            skip_rest(&mut input);
            Ok(())
        }
        // The applier stopped (its own error explains why); dropping `input` tells the download.
        Ok(Pumped::ConsumerGone) => Ok(()),
        Err(e) => send_error(tx, e),
    }
}

/// Reads `input` to its end without copying it anywhere; a read error ends it too (the bytes
/// are unused either way).
fn skip_rest(input: &mut impl BufRead) {
    while let Ok(available) = input.fill_buf() {
        let n = available.len();
        if n == 0 {
            break;
        }
        input.consume(n);
    }
}

enum Pumped {
    End,
    ConsumerGone,
}

fn pump(
    decoder: &mut dyn Read,
    tx: &SyncSender<io::Result<Decoded>>,
    recycled: &StdReceiver<Vec<u8>>,
) -> io::Result<Pumped> {
    loop {
        let mut data = recycled
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; DECODED_CHUNK]);
        let mut len = 0;
        let mut end = false;
        while len < data.len() {
            match decoder.read(&mut data[len..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len > 0 && tx.send(Ok(Decoded { data, len })).is_err() {
            return Ok(Pumped::ConsumerGone);
        }
        if end {
            return Ok(Pumped::End);
        }
    }
}

/// Passes a decoding error to the reader (so the applier stops) and returns it.
fn send_error(tx: &SyncSender<io::Result<Decoded>>, e: io::Error) -> io::Result<()> {
    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn chunks_of(data: &[u8], size: usize) -> ChunkReader {
        let (tx, rx) = tokio::sync::mpsc::channel(data.len() / size + 2);
        for piece in data.chunks(size) {
            tx.try_send(Bytes::copy_from_slice(piece)).unwrap();
        }
        ChunkReader::new(rx)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn read_all(encoding: LayerEncoding, input: ChunkReader) -> (io::Result<()>, Vec<u8>) {
        let (decoded, out) = decode_while(encoding, input, |r| {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            out
        });
        (decoded, out)
    }

    #[test]
    fn every_encoding_decodes_across_chunk_and_buffer_boundaries() {
        let data = pattern(DECODED_CHUNK * 3 + 12345);
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        // Two gzip members, as parallel writers produce.
        let mut two_members = gzip(&data[..1000]);
        two_members.extend(gzip(&data[1000..]));
        for (encoding, blob) in [
            (LayerEncoding::Plain, data.clone()),
            (LayerEncoding::Gzip, two_members),
            (LayerEncoding::Zstd, zstd),
        ] {
            for chunk in [1, 4096, 1 << 20] {
                if chunk == 1 && blob.len() > 100_000 && encoding == LayerEncoding::Plain {
                    continue;
                }
                let (decoded, out) = read_all(encoding, chunks_of(&blob, chunk));
                decoded.unwrap();
                assert!(out == data, "{encoding:?} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn damaged_gzip_is_an_error_for_both_sides() {
        let data = pattern(100_000);
        let good = gzip(&data);
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1; // the CRC32 of the trailer: the data itself is intact
        let truncated = good[..good.len() - 20].to_vec();
        for (what, blob) in [("bad crc", bad_crc), ("truncated", truncated)] {
            let (decoded, consumed) =
                decode_while(LayerEncoding::Gzip, chunks_of(&blob, 4096), |r| {
                    io::copy(r, &mut io::sink())
                });
            assert!(decoded.is_err(), "{what}: decoder accepted it");
            assert!(consumed.is_err(), "{what}: the reader saw a clean end");
        }
    }

    #[test]
    fn a_consumer_stopping_early_does_not_block_the_decoder() {
        let data = pattern(DECODED_CHUNK * 20);
        let blob = gzip(&data);
        let (decoded, first) = decode_while(LayerEncoding::Gzip, chunks_of(&blob, 65536), |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map(|_| b)
        });
        decoded.unwrap();
        assert_eq!(&first.unwrap()[..], &data[..10]);
    }
}
