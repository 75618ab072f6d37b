//! Benchmark driver for the layer writer and applier (see bench/layers/run.sh).
//!
//!   layer_bench gen-small DIR COUNT         COUNT small files (text-like, 200 B - 8 KiB)
//!   layer_bench write DIR gzip|zstd|none OUT write_layer(DIR) -> OUT
//!   layer_bench compress TAR gzip|zstd      the writer's compressor alone on a tar file
//!   layer_bench apply BLOB DEST             apply_layer(BLOB) -> DEST
//!
//! Each measuring command prints one line: `seconds=<s> bytes=<n> entries=<n>`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, Compression, WriteOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gen-small", dir, count] => gen_small(Path::new(dir), count.parse().unwrap_or(30_000)),
        ["write", dir, compression, out] => write(Path::new(dir), compression, Path::new(out)),
        ["compress", tar, compression] => compress(Path::new(tar), compression),
        ["apply", blob, dest] => apply(Path::new(blob), Path::new(dest)),
        _ => {
            eprintln!("usage: layer_bench gen-small DIR COUNT | write DIR COMPRESSION OUT | compress TAR COMPRESSION | apply BLOB DEST");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn gen_small(dir: &Path, count: usize) -> Res {
    const WORDS: [&str; 12] = [
        "layer", "overlay", "image", "build", "config", "binary", "library", "module", "data",
        "value", "index", "root",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..count {
        let sub = dir.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let size = 200 + (next() % 8000) as usize;
        let mut content = Vec::with_capacity(size + 16);
        while content.len() < size {
            content.extend_from_slice(WORDS[(next() % 12) as usize].as_bytes());
            content.extend_from_slice(format!(" {} ", next() % 1000).as_bytes());
            if next() % 8 == 0 {
                content.push(b'\n');
            }
        }
        std::fs::write(sub.join(format!("f{i:05}.txt")), &content)?;
    }
    Ok(())
}

fn compression(name: &str) -> Result<Compression, Box<dyn std::error::Error>> {
    Ok(name.parse()?)
}

fn write(dir: &Path, name: &str, out: &Path) -> Res {
    let opts = WriteOptions {
        compression: compression(name)?,
        mtime_clamp: None,
    };
    let file = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let start = Instant::now();
    let info = write_layer(dir, &opts, file)?;
    let secs = start.elapsed().as_secs_f64();
    println!("seconds={secs:.4} bytes={} entries=0", info.size);
    Ok(())
}

/// Compresses a tar file with exactly the writer's settings (flate2 zlib-rs default level,
/// zstd level 3 with one worker per CPU), discarding the output.
fn compress(tar: &Path, name: &str) -> Res {
    let mut input = File::open(tar)?;
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    let mut sink = Counter(0);
    match compression(name)? {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut sink, flate2::Compression::default());
            total += pump(&mut input, &mut enc, &mut buf)?;
            enc.finish()?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut sink, 3)?;
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
            if workers > 1 {
                enc.multithread(workers as u32)?;
            }
            total += pump(&mut input, &mut enc, &mut buf)?;
            enc.finish()?;
        }
        Compression::None => total += pump(&mut input, &mut sink, &mut buf)?,
    }
    let secs = start.elapsed().as_secs_f64();
    println!("seconds={secs:.4} bytes={} entries=0 input={total}", sink.0);
    Ok(())
}

fn pump(input: &mut impl Read, out: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = input.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn apply(blob: &Path, dest: &Path) -> Res {
    let input = File::open(blob)?;
    let start = Instant::now();
    let stats = apply_layer(input, dest, &ApplyLimits::default())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "seconds={secs:.4} bytes={} entries={}",
        stats.tar_bytes, stats.entries
    );
    Ok(())
}
