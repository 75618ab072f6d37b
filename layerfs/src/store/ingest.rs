//! Blob ingest, following containerd's content store: stream into the session's tmp dir while
//! hashing, fsync, verify size and digest, rename into `blobs/sha256/<hex>`, fsync the directory.
//! A blob with a wrong digest or size is never committed.
//!
//! Early writeback: every 8 MiB the ingest asks the kernel to start writing
//! the range it just wrote (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so
//! the disk works while the blob still streams in and the fsync at commit finds little dirty
//! data; `flush` does the same for the rest. Durability is unchanged: commit still fsyncs the file before the rename and the
//! directory after it.

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{fsync_dir, random_hex};
use super::Store;
use crate::digest::{Digest, HashingWriter};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes written between two early-writeback requests.
const WRITEBACK_CHUNK: u64 = 8 << 20;
/// Buffer for small writes; writes at least this large go to the file directly (no copy).
const WRITE_BUFFER: usize = 128 << 10;

/// An in-flight blob write. Write the content, then [`Ingest::commit`]; dropping it discards it.
pub struct Ingest {
    store: Store,
    path: PathBuf,
    writer: Option<HashingWriter<BufWriter<WritebackFile>>>,
}

/// A file that starts writeback of each [`WRITEBACK_CHUNK`] as soon as it is written.
struct WritebackFile {
    file: File,
    /// Bytes written to the file.
    written: u64,
    /// Offset up to which writeback has been requested.
    requested: u64,
}

impl WritebackFile {
    fn new(file: File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            requested: 0,
        }
    }

    /// Asks the kernel to start writing `[requested, written)` to disk without waiting. Purely a
    /// hint: a failure (a filesystem without support) only loses the head start, and the fsync
    /// at commit reports any real write error.
    fn start_writeback(&mut self) {
        let len = self.written - self.requested;
        if len == 0 {
            return;
        }
        // SAFETY: sync_file_range only reads its integer arguments; the fd is open and owned by
        // self.file for the duration of the call.
        let _ = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.requested as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.requested = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.requested >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }
    /// Starts writeback of everything written so far (without waiting for it).
    fn flush(&mut self) -> io::Result<()> {
        self.start_writeback();
        Ok(())
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("path", &self.path).finish()
    }
}

impl Ingest {
    pub(crate) fn new(store: &Store) -> Result<Ingest> {
        let path = store
            .session_dir()
            .join(format!("ingest-{}", random_hex(8)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .at("create ingest file", &path)?;
        Ok(Ingest {
            store: store.clone(),
            path,
            writer: Some(HashingWriter::new(BufWriter::with_capacity(
                WRITE_BUFFER,
                WritebackFile::new(file),
            ))),
        })
    }

    /// The file being written (in the session's tmp dir; it moves when published). Another
    /// handle on it may flush its data early (`fdatasync` while the blob still streams in).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.written())
    }

    /// Finishes the write: fsync, check the digest and size against what is expected (when
    /// given), then move the blob into place. Returns the digest and size of the content.
    pub fn commit(
        self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        self.seal(expected, expected_size)?.publish()
    }

    /// The first half of [`Ingest::commit`]: checks the digest and size against what is
    /// expected (when given) and fsyncs the content, but leaves it in the tmp dir (where a
    /// crashed process's leftovers are cleaned up) until [`SealedBlob::publish`] or
    /// [`Store::publish_blobs`] moves it into place. Lets a caller do the slow part early and
    /// publish only once everything it depends on is verified.
    pub fn seal(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<SealedBlob> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| StoreError::Other("ingest already finished".into()))?;
        let (buf, digest, size) = writer.finish();
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .at("write", &self.path)?
            .file;
        if let Some(want) = expected_size {
            if want != size {
                return Err(StoreError::SizeMismatch {
                    digest,
                    expected: want,
                    actual: size,
                });
            }
        }
        if let Some(want) = expected {
            if *want != digest {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        file.sync_all().at("fsync", &self.path)?;
        drop(file);
        Ok(SealedBlob {
            store: self.store.clone(),
            // Ownership of the file moves to the sealed blob; this ingest's drop skips it.
            path: std::mem::take(&mut self.path),
            digest,
            size,
        })
    }
}

/// A verified, fsynced blob still in the tmp dir; dropping it discards it.
pub struct SealedBlob {
    store: Store,
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

impl SealedBlob {
    /// Digest of the content.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Moves the blob into `blobs/sha256/<hex>` and fsyncs that directory. Returns the digest and
    /// size of the content.
    pub fn publish(self) -> Result<(Digest, u64)> {
        let store = self.store.clone();
        let out = (self.digest.clone(), self.size);
        store.publish_blobs(vec![self])?;
        Ok(out)
    }

    /// Renames the blob into place without the directory fsync; true if it was renamed (not
    /// already present).
    fn rename_into_place(mut self) -> Result<bool> {
        let path = std::mem::take(&mut self.path);
        let placed = self.store.place_file_as_blob(&path, &self.digest);
        if placed.is_err() {
            let _ = fs::remove_file(&path);
        }
        placed
    }
}

impl Drop for SealedBlob {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `flush` hands buffered bytes to the file and starts their writeback without waiting for it:
/// call it when the content is complete but the commit must wait for something else, so that
/// the disk catches up in the meantime.
impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("ingest already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root().join("blobs/sha256").join(digest.hex())
    }

    /// True when the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(digest.clone())
            } else {
                StoreError::Io {
                    action: "open blob",
                    path,
                    cause: e,
                }
            }
        })
    }

    /// Reads a whole blob into memory (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .at("read blob", &self.blob_path(digest))?;
        Ok(data)
    }

    /// Starts a streaming blob write.
    pub fn ingest(&self) -> Result<Ingest> {
        Ingest::new(self)
    }

    /// Stores a small blob from memory and returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest) {
            self.touch(&self.blob_path(&digest));
            return Ok(digest);
        }
        let mut ingest = self.ingest()?;
        ingest.write_all(data).at("write", &ingest.path.clone())?;
        ingest.commit(Some(&digest), Some(data.len() as u64))?;
        Ok(digest)
    }

    /// Stores a blob read from `reader`, verifying it against `expected` and `size` when given.
    pub fn put_blob_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let mut ingest = self.ingest()?;
        let path = ingest.path.clone();
        io::copy(reader, &mut ingest).at("copy into", &path)?;
        ingest.commit(expected, size)
    }

    /// Moves sealed blobs into `blobs/sha256/` with one directory fsync for all of them.
    pub fn publish_blobs(&self, blobs: Vec<SealedBlob>) -> Result<()> {
        let mut renamed = false;
        for blob in blobs {
            renamed |= blob.rename_into_place()?;
        }
        if renamed {
            fsync_dir(&self.root().join("blobs/sha256"))?;
        }
        Ok(())
    }

    /// Moves a verified, fsynced file into `blobs/sha256/<hex>` (no directory fsync): true if it
    /// was renamed into place, false if the blob was already there (then `file` is removed and
    /// the existing blob is marked as recently used).
    fn place_file_as_blob(&self, file: &Path, digest: &Digest) -> Result<bool> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            let _ = fs::remove_file(file);
            self.touch(&dest);
            return Ok(false);
        }
        fs::rename(file, &dest).at("commit blob", &dest)?;
        Ok(true)
    }

    /// Sets a path's mtime to now: objects touched by a live process are kept by prune.
    pub(crate) fn touch(&self, path: &Path) {
        if let Ok(f) = File::options()
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mixed small (buffered) and large (direct) writes, a flush in the middle and early
    /// writeback on the way: the committed blob is byte for byte what was written.
    #[test]
    fn early_writeback_keeps_content_and_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("open store");
        let mut data = Vec::new();
        let mut ingest = store.ingest().expect("ingest");
        let mut piece = 0u32;
        while data.len() < (WRITEBACK_CHUNK as usize) * 2 + 12345 {
            let len = if piece.is_multiple_of(3) {
                700
            } else {
                400 << 10
            };
            let chunk: Vec<u8> = (0..len).map(|i| (i as u32 ^ piece) as u8).collect();
            ingest.write_all(&chunk).expect("write");
            data.extend_from_slice(&chunk);
            piece += 1;
            if piece == 7 {
                ingest.flush().expect("flush");
            }
        }
        ingest.flush().expect("flush");
        let file = ingest.writer.as_mut().expect("open").get_mut().get_ref();
        assert_eq!(
            file.written,
            data.len() as u64,
            "flush wrote the buffer out"
        );
        assert_eq!(
            file.requested, file.written,
            "flush started writeback of all"
        );
        let want = Digest::of_bytes(&data);
        let (digest, size) = ingest
            .commit(Some(&want), Some(data.len() as u64))
            .expect("commit");
        assert_eq!((digest.clone(), size), (want, data.len() as u64));
        assert_eq!(store.read_blob(&digest).expect("read blob"), data);
    }

    fn tmp_files(store: &Store) -> usize {
        walkdir::WalkDir::new(store.root().join("tmp"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file() && !e.path().to_string_lossy().ends_with(".lock"))
            .count()
    }

    /// A sealed blob is invisible until published; several publish with one call; a dropped
    /// one leaves nothing behind; a wrong digest never gets sealed.
    #[test]
    fn sealed_blobs_appear_only_when_published() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("open store");
        let seal = |data: &[u8]| {
            let mut ingest = store.ingest().expect("ingest");
            ingest.write_all(data).expect("write");
            ingest
                .seal(Some(&Digest::of_bytes(data)), Some(data.len() as u64))
                .expect("seal")
        };
        let (a, b, c) = (seal(b"config"), seal(b"manifest"), seal(b"dropped"));
        let (da, db, dc) = (a.digest().clone(), b.digest().clone(), c.digest().clone());
        assert!(!store.has_blob(&da) && !store.has_blob(&db) && !store.has_blob(&dc));
        assert_eq!(tmp_files(&store), 3, "sealed files wait in the tmp dir");
        drop(c);
        assert_eq!(tmp_files(&store), 2, "a dropped sealed blob is removed");
        store.publish_blobs(vec![a, b]).expect("publish");
        assert_eq!(store.read_blob(&da).expect("config"), b"config");
        assert_eq!(store.read_blob(&db).expect("manifest"), b"manifest");
        assert!(!store.has_blob(&dc));
        assert_eq!(tmp_files(&store), 0);

        // Publishing what is already there keeps the existing blob and removes the new file.
        let again = seal(b"config");
        assert_eq!(again.publish().expect("publish again"), (da, 6));
        assert_eq!(tmp_files(&store), 0);

        let mut ingest = store.ingest().expect("ingest");
        ingest.write_all(b"content").expect("write");
        let err = ingest
            .seal(Some(&Digest::of_bytes(b"other")), None)
            .expect_err("wrong digest");
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert_eq!(tmp_files(&store), 0, "the refused content is removed");
    }
}
