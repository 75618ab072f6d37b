//! Blob ingest, following containerd's content store: stream into the session's tmp dir while
//! hashing, fsync, verify size and digest, rename into `blobs/sha256/<hex>`, fsync the directory.
//! A blob with a wrong digest or size is never committed.

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{fsync_dir, random_hex};
use super::Store;
use crate::digest::{Digest, HashingWriter};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An in-flight blob write. Write the content, then [`Ingest::commit`]; dropping it discards it.
pub struct Ingest {
    store: Store,
    path: PathBuf,
    writer: Option<HashingWriter<BufWriter<File>>>,
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
            writer: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.written())
    }

    /// Finishes the write: fsync, check the digest and size against what is expected (when
    /// given), then move the blob into place. Returns the digest and size of the content.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| StoreError::Other("ingest already finished".into()))?;
        let (buf, digest, size) = writer.finish();
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .at("write", &self.path)?;
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
        self.store.commit_file_as_blob(&self.path, &digest)?;
        Ok((digest, size))
    }
}

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
        let _ = fs::remove_file(&self.path);
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

    /// Moves a verified, fsynced file into `blobs/sha256/<hex>`; if the blob already exists the
    /// file is dropped and the existing blob is marked as recently used.
    pub(crate) fn commit_file_as_blob(&self, file: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            let _ = fs::remove_file(file);
            self.touch(&dest);
            return Ok(());
        }
        fs::rename(file, &dest).at("commit blob", &dest)?;
        fsync_dir(&self.root().join("blobs/sha256"))
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
