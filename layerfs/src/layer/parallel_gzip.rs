//! Parallel gzip: one standard gzip member (RFC 1952), compressed pigz-style on worker threads.
//!
//! The input is cut at fixed offsets into [`CHUNK_SIZE`] chunks. Each chunk is compressed on a
//! worker as raw deflate that ends byte-aligned (a sync flush, or stored blocks), primed with the
//! 32 KiB of input before it as dictionary so matches can reach back across chunk boundaries; only
//! the last chunk carries the final block. The caller's thread writes the chunks in order between
//! one gzip header and one trailer, whose CRC-32 is combined from the chunks' CRCs.
//!
//! Incompressible input takes a fast path: every [`SEGMENT_SIZE`] piece of a chunk whose bytes
//! look incompressible (order-0 entropy near 8 bits per byte and almost no repeats within
//! deflate's 32 KiB window) is written as stored blocks instead of being run through the match
//! finder, which would spend most of its time failing to find matches. Random or already
//! compressed files (the common bulk of large layers) then cost a copy and a CRC.
//!
//! The output depends only on the input bytes: chunk and segment boundaries are fixed offsets, the
//! stored-or-deflate decision looks only at the segment's own bytes, and chunks are written in
//! input order, so the number of workers and their timing never change a byte (reproducible
//! builds keep their image IDs). At most a fixed number of chunks is in flight.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Bytes of input per chunk (one job for a worker).
pub const CHUNK_SIZE: usize = 1 << 20;

/// Bytes of input per stored-or-deflate decision inside a chunk.
pub const SEGMENT_SIZE: usize = 64 << 10;

/// Deflate's window: how far back a match may reach, and the dictionary given to each chunk.
const WINDOW: usize = 32 << 10;

/// Largest payload of one stored deflate block.
const STORED_BLOCK_MAX: usize = 65_535;

/// Segments shorter than this are always deflated (the test costs more than it saves).
const MIN_TESTED_SEGMENT: usize = 4 << 10;

/// Order-0 entropy (bits per byte) above which a segment may be stored.
const STORED_ENTROPY_BITS: f64 = 7.9;

/// At most 1/this of a segment's bytes may be covered by found repeats for it to be stored.
const STORED_MAX_MATCHED_FRACTION: usize = 32;

/// Most worker threads used, whatever the machine has.
const MAX_WORKERS: usize = 8;

/// Chunks in flight per worker (queued or being compressed, or compressed and not yet written).
const IN_FLIGHT_PER_WORKER: usize = 2;

/// The gzip header: deflate, no flags, no mtime, no extra flags, OS unknown (as flate2 writes it).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Capacity of pooled buffers: a chunk plus room for what deflate adds to incompressible input.
const BUFFER_CAPACITY: usize = CHUNK_SIZE + CHUNK_SIZE / 32;

/// Most idle buffers a pool keeps.
const MAX_POOLED: usize = 16;

/// Chunk-sized buffers shared by the producer of the input, the workers and the writer, so the
/// pipeline cycles through a few buffers instead of faulting in fresh memory for every chunk.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    /// An empty buffer with room for a chunk and its compressed form.
    pub fn take(&self) -> Vec<u8> {
        let pooled = self.0.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        pooled.unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Returns a buffer for reuse (dropped when the pool is full or the buffer is small).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < CHUNK_SIZE {
            return;
        }
        buf.clear();
        if let Ok(mut idle) = self.0.lock() {
            if idle.len() < MAX_POOLED {
                idle.push(buf);
            }
        }
    }
}

/// Worker threads to use on this machine.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
}

/// A compressed chunk and the CRC of its input.
type ChunkResult = io::Result<(Vec<u8>, Crc)>;

/// One chunk for a worker.
struct Job {
    /// The chunk's input.
    data: Vec<u8>,
    /// Up to [`WINDOW`] bytes of input just before the chunk.
    history: Vec<u8>,
    /// The chunk ends the stream: its last block is final.
    last: bool,
    /// Where the worker sends the result.
    reply: SyncSender<ChunkResult>,
}

/// A gzip writer that compresses on worker threads; see the module docs.
///
/// Call [`ParallelGzip::finish`] to write the end of the stream; dropping it without finishing
/// leaves a truncated stream (the workers then finish their current chunk and exit).
pub struct ParallelGzip<W: Write> {
    inner: W,
    /// The chunk being filled.
    pending: Vec<u8>,
    /// Up to [`WINDOW`] bytes of input before `pending`.
    history: Vec<u8>,
    /// CRC of the input whose chunks have been written.
    crc: Crc,
    /// Results of dispatched chunks, oldest first.
    in_flight: VecDeque<Receiver<ChunkResult>>,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    header_written: bool,
    pool: BufferPool,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer compressing at `level` with `workers` threads (at least one), taking its
    /// buffers from `pool`, which the caller may share with whatever produces the chunks it
    /// hands to [`ParallelGzip::write_owned`].
    pub fn new(
        inner: W,
        level: flate2::Compression,
        workers: usize,
        pool: BufferPool,
    ) -> io::Result<Self> {
        let workers = workers.clamp(1, MAX_WORKERS);
        let max_in_flight = workers * IN_FLIGHT_PER_WORKER;
        let (tx, rx) = mpsc::sync_channel::<Job>(max_in_flight);
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let pool = pool.clone();
            let handle = std::thread::Builder::new()
                .name(format!("layer-gzip-{i}"))
                .spawn(move || work(&rx, level, &pool))?;
            handles.push(handle);
        }
        Ok(ParallelGzip {
            inner,
            pending: pool.take(),
            history: Vec::new(),
            crc: Crc::new(),
            in_flight: VecDeque::with_capacity(max_in_flight),
            max_in_flight,
            jobs: Some(tx),
            workers: handles,
            header_written: false,
            pool,
        })
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.pending);
        self.dispatch(last, true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.stop_workers();
        Ok(self.inner)
    }

    /// Writes `data`, taking the buffer over when it is a whole chunk at a chunk boundary (the
    /// bytes written are the same as with `write_all`, only a copy is saved).
    pub fn write_owned(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.pending.is_empty() && data.len() == CHUNK_SIZE {
            return self.dispatch(data, false);
        }
        self.write_all(&data)
    }

    /// Hands a chunk to the workers, first writing finished chunks when too many are in flight.
    fn dispatch(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&GZIP_HEADER)?;
            self.header_written = true;
        }
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let history = std::mem::take(&mut self.history);
        self.history = next_history(&history, &data);
        let (reply, result) = mpsc::sync_channel(1);
        let job = Job {
            data,
            history,
            last,
            reply,
        };
        let jobs = self.jobs.as_ref().ok_or_else(workers_gone)?;
        jobs.send(job).map_err(|_| workers_gone())?;
        self.in_flight.push_back(result);
        // Write whatever is already done so the output streams on.
        while let Some(Ok(done)) = self.in_flight.front().map(Receiver::try_recv) {
            self.in_flight.pop_front();
            self.write_result(done)?;
        }
        Ok(())
    }

    /// Waits for the oldest chunk in flight and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = rx.recv().map_err(|_| workers_gone())?;
        self.write_result(done)
    }

    fn write_result(&mut self, done: ChunkResult) -> io::Result<()> {
        let (bytes, crc) = done?;
        self.inner.write_all(&bytes)?;
        self.crc.combine(&crc);
        self.pool.give(bytes);
        Ok(())
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.pending.len();
        let n = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK_SIZE {
            let full = std::mem::replace(&mut self.pending, self.pool.take());
            self.dispatch(full, false)?;
        }
        Ok(n)
    }

    /// Writes out the chunks already compressed; a partly filled chunk stays buffered, as its
    /// boundary must not depend on when flush is called.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(Ok(done)) = self.in_flight.front().map(Receiver::try_recv) {
            self.in_flight.pop_front();
            self.write_result(done)?;
        }
        self.inner.flush()
    }
}

fn workers_gone() -> io::Error {
    io::Error::other("a gzip worker thread stopped unexpectedly")
}

/// The last [`WINDOW`] bytes of `history` followed by `data`.
fn next_history(history: &[u8], data: &[u8]) -> Vec<u8> {
    if data.len() >= WINDOW {
        return data[data.len() - WINDOW..].to_vec();
    }
    let keep = (WINDOW - data.len()).min(history.len());
    let mut next = Vec::with_capacity(keep + data.len());
    next.extend_from_slice(&history[history.len() - keep..]);
    next.extend_from_slice(data);
    next
}

/// A worker: takes jobs until the channel closes.
fn work(jobs: &Mutex<Receiver<Job>>, level: flate2::Compression, pool: &BufferPool) {
    let mut compress = Compress::new(level, false);
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut crc = Crc::new();
        crc.update(&job.data);
        let mut out = pool.take();
        let result = encode_chunk(&mut compress, &job.data, &job.history, job.last, &mut out)
            .map(|()| (out, crc));
        pool.give(job.data);
        // The writer may have gone away (an error elsewhere); nothing to do then.
        let _ = job.reply.send(result);
    }
}

/// Appends the raw deflate of one chunk to `out`, ending byte-aligned; with the final block
/// when `last`.
fn encode_chunk(
    compress: &mut Compress,
    data: &[u8],
    history: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if data.is_empty() {
        if last {
            write_stored(out, &[], true);
        }
        return Ok(());
    }
    let runs = plan_runs(data);
    let count = runs.len();
    for (i, run) in runs.into_iter().enumerate() {
        let final_run = last && i + 1 == count;
        let input = &data[run.start..run.end];
        if run.stored {
            write_stored(out, input, final_run);
        } else {
            let dictionary = window_before(history, data, run.start);
            deflate_run(compress, &dictionary, input, final_run, out)?;
        }
    }
    Ok(())
}

/// A stretch of a chunk written one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    end: usize,
    stored: bool,
}

/// Splits a chunk into maximal runs of stored and deflated segments.
fn plan_runs(data: &[u8]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + SEGMENT_SIZE).min(data.len());
        let stored = looks_incompressible(&data[start..end]);
        match runs.last_mut() {
            Some(prev) if prev.stored == stored => prev.end = end,
            _ => runs.push(Run { start, end, stored }),
        }
        start = end;
    }
    runs
}

/// Up to [`WINDOW`] bytes of input before offset `at` of the chunk.
fn window_before<'a>(history: &'a [u8], data: &'a [u8], at: usize) -> std::borrow::Cow<'a, [u8]> {
    if at >= WINDOW {
        return std::borrow::Cow::Borrowed(&data[at - WINDOW..at]);
    }
    if at == 0 {
        return std::borrow::Cow::Borrowed(history);
    }
    let keep = (WINDOW - at).min(history.len());
    let mut joined = Vec::with_capacity(keep + at);
    joined.extend_from_slice(&history[history.len() - keep..]);
    joined.extend_from_slice(&data[..at]);
    std::borrow::Cow::Owned(joined)
}

/// Deflates `input` primed with `dictionary`, ending with a sync flush, or the final block.
fn deflate_run(
    compress: &mut Compress,
    dictionary: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    compress.reset();
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start_in = compress.total_in();
    loop {
        let consumed = (compress.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve((input.len() - consumed) / 2 + 4096);
        }
        let status = compress
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let consumed = (compress.total_in() - start_in) as usize;
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => return Ok(()),
            // A sync flush is complete once all input is in and the output was not full.
            Status::Ok | Status::BufError if !last && consumed == input.len() && room_left => {
                return Ok(())
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// Appends `data` as stored deflate blocks (the output is byte-aligned before and after).
fn write_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
    if data.is_empty() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return;
    }
    let pieces = data.len().div_ceil(STORED_BLOCK_MAX);
    for (i, piece) in data.chunks(STORED_BLOCK_MAX).enumerate() {
        let len = piece.len() as u16;
        out.push(u8::from(last && i + 1 == pieces));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

/// True when deflate would gain (almost) nothing on `segment`: its byte histogram is nearly
/// flat and a quick scan finds almost no repeats. Depends only on the segment's bytes.
fn looks_incompressible(segment: &[u8]) -> bool {
    segment.len() >= MIN_TESTED_SEGMENT
        && entropy_bits_per_byte(segment) > STORED_ENTROPY_BITS
        && matched_bytes(segment) * STORED_MAX_MATCHED_FRACTION < segment.len()
}

/// Order-0 (byte histogram) entropy in bits per byte, estimated from a fixed sample: the first
/// 4 bytes of every 16 (all bytes of a short input). A quarter of the bytes estimates a segment's
/// entropy to within a few hundredths of a bit, at a quarter of the cost.
fn entropy_bits_per_byte(data: &[u8]) -> f64 {
    // Four interleaved histograms keep consecutive equal bytes from stalling on one counter.
    let mut counts = [[0u32; 256]; 4];
    let sampled = if data.len() >= 1024 {
        for block in data.chunks_exact(16) {
            counts[0][block[0] as usize] += 1;
            counts[1][block[1] as usize] += 1;
            counts[2][block[2] as usize] += 1;
            counts[3][block[3] as usize] += 1;
        }
        data.len() / 16 * 4
    } else {
        for &b in data {
            counts[0][b as usize] += 1;
        }
        data.len()
    };
    let n = sampled as f64;
    let mut bits = 0.0;
    let [a, b, c, d] = &counts;
    for (((a, b), c), d) in a.iter().zip(b).zip(c).zip(d) {
        let c = a + b + c + d;
        if c > 0 {
            let p = f64::from(c) / n;
            bits -= p * p.log2();
        }
    }
    bits
}

/// Bytes covered by repeats (of at least 4 bytes, within the deflate window) that a sparse scan
/// finds. The scan probes every position at first and strides further the longer it finds
/// nothing (snappy's heuristic), so random data costs a few thousand probes per segment, while
/// any real repetition resets the stride and is counted.
fn matched_bytes(data: &[u8]) -> usize {
    const HASH_BITS: u32 = 12;
    let mut table = [0u32; 1 << HASH_BITS];
    let mut matched = 0;
    let mut i = 0;
    let mut misses = 32usize;
    let read4 =
        |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    while i + 4 <= data.len() {
        let word = read4(i);
        let slot = (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize;
        let candidate = table[slot] as usize;
        table[slot] = i as u32 + 1;
        if candidate > 0 {
            let c = candidate - 1;
            if i - c <= WINDOW && read4(c) == word {
                let mut len = 4;
                while i + len < data.len() && data[c + len] == data[i + len] {
                    len += 1;
                }
                matched += len;
                i += len;
                misses = 32;
                continue;
            }
        }
        i += misses >> 5;
        misses += 1;
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        // xorshift64*: deterministic incompressible bytes without a dependency.
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn stored_blocks_decode_and_split_at_the_block_limit() {
        let data = noise(STORED_BLOCK_MAX * 2 + 7, 3);
        let mut raw = Vec::new();
        write_stored(&mut raw, &data, true);
        assert_eq!(raw.len(), data.len() + 3 * 5);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn noise_is_stored_and_text_is_deflated() {
        assert!(looks_incompressible(&noise(SEGMENT_SIZE, 9)));
        let text: Vec<u8> = (0..SEGMENT_SIZE)
            .map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44])
            .collect();
        assert!(!looks_incompressible(&text));
        // Random bytes repeated every 8 KiB have a flat histogram but compress well.
        let block = noise(8 << 10, 5);
        let repeated: Vec<u8> = block.iter().copied().cycle().take(SEGMENT_SIZE).collect();
        assert!(entropy_bits_per_byte(&repeated) > STORED_ENTROPY_BITS);
        assert!(!looks_incompressible(&repeated));
        // Base64-like text: no repeats but only 6 bits per byte.
        let b64: Vec<u8> = noise(SEGMENT_SIZE, 11)
            .iter()
            .map(|b| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(b & 63) as usize]
            })
            .collect();
        assert!(!looks_incompressible(&b64));
    }

    #[test]
    fn empty_input_is_a_valid_gzip_member() {
        let gz = ParallelGzip::new(
            Vec::new(),
            flate2::Compression::default(),
            2,
            BufferPool::default(),
        )
        .unwrap()
        .finish()
        .unwrap();
        assert_eq!(gunzip(&gz), b"");
    }

    #[test]
    fn history_keeps_the_last_window_of_input() {
        let a = vec![1u8; 10];
        let b = vec![2u8; WINDOW];
        assert_eq!(next_history(&a, &b), b);
        let joined = next_history(&a, &[3, 4]);
        assert_eq!(joined, [&a[..], &[3, 4]].concat());
        let long = vec![5u8; WINDOW];
        let h = next_history(&long, &[6]);
        assert_eq!(h.len(), WINDOW);
        assert_eq!(*h.last().unwrap(), 6);
    }

    /// Text with repeats, noise, zeros and a repeated noise block, across several chunks and not
    /// a multiple of the chunk size: every path of the encoder.
    fn mixed_input() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..40_000 {
            data.extend_from_slice(format!("line {i} of some layer text\n").as_bytes());
        }
        data.extend_from_slice(&noise(3 * CHUNK_SIZE + 12_345, 1));
        data.extend_from_slice(&vec![0u8; CHUNK_SIZE / 2]);
        let block = noise(10 << 10, 2);
        data.extend(block.iter().copied().cycle().take(CHUNK_SIZE + 99));
        data.extend_from_slice(&noise(SEGMENT_SIZE / 3, 4));
        data
    }

    fn compress_with(data: &[u8], workers: usize, write_size: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(
            Vec::new(),
            flate2::Compression::default(),
            workers,
            BufferPool::default(),
        )
        .unwrap();
        for piece in data.chunks(write_size) {
            gz.write_all(piece).unwrap();
        }
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn output_depends_only_on_the_input_not_on_workers_or_write_sizes() {
        let data = mixed_input();
        let one = compress_with(&data, 1, CHUNK_SIZE);
        assert_eq!(gunzip(&one), data);
        for (workers, write_size) in [(2, 1000), (4, 65_536 + 3), (8, 3 * CHUNK_SIZE)] {
            assert!(
                compress_with(&data, workers, write_size) == one,
                "{workers} workers, writes of {write_size} bytes"
            );
        }
        // Whole chunks handed over by value, with an unaligned piece in between.
        let mut gz = ParallelGzip::new(
            Vec::new(),
            flate2::Compression::default(),
            3,
            BufferPool::default(),
        )
        .unwrap();
        let (head, rest) = data.split_at(2 * CHUNK_SIZE);
        for piece in head.chunks(CHUNK_SIZE) {
            gz.write_owned(piece.to_vec()).unwrap();
        }
        let (odd, rest) = rest.split_at(100);
        gz.write_owned(odd.to_vec()).unwrap();
        for piece in rest.chunks(CHUNK_SIZE) {
            gz.write_owned(piece.to_vec()).unwrap();
        }
        assert!(
            gz.finish().unwrap() == one,
            "write_owned changed the output"
        );
    }

    #[test]
    fn compression_stays_close_to_single_stream_gzip() {
        let data = mixed_input();
        let ours = compress_with(&data, 2, 1 << 16);
        let mut reference =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        reference.write_all(&data).unwrap();
        let reference = reference.finish().unwrap();
        // Noise stored instead of deflated and the per-chunk flushes cost a little, never more
        // than a fraction of a percent of the input here.
        assert!(
            ours.len() <= reference.len() + data.len() / 200,
            "ours {} vs single-stream {}",
            ours.len(),
            reference.len()
        );
    }

    #[test]
    fn exact_multiples_of_the_chunk_size_end_with_an_empty_final_block() {
        for len in [CHUNK_SIZE, 2 * CHUNK_SIZE] {
            let data = noise(len, len as u64);
            let gz = compress_with(&data, 3, 4096);
            assert_eq!(gunzip(&gz), data);
            assert_eq!(&gz[gz.len() - 13..gz.len() - 8], &[1, 0, 0, 0xff, 0xff]);
        }
    }
}
