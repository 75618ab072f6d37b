//! ADD's local archive auto-extraction: gzip, bzip2, xz, zstd or plain tar, recognised by
//! content (as Docker does), unpacked inside the image root through [`RootWriter`].

use super::fswrite::{split_path, Attrs, RootWriter};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Compression of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// Uncompressed tar.
    Tar,
    /// gzip-compressed tar.
    Gzip,
    /// bzip2-compressed tar.
    Bzip2,
    /// xz-compressed tar.
    Xz,
    /// zstd-compressed tar.
    Zstd,
}

fn decoder<'a>(kind: ArchiveKind, f: File) -> io::Result<Box<dyn Read + 'a>> {
    let r = BufReader::with_capacity(1 << 20, f);
    Ok(match kind {
        ArchiveKind::Tar => Box::new(r),
        ArchiveKind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        ArchiveKind::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        ArchiveKind::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        ArchiveKind::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    // Old (v7) tar: no magic, but a valid header checksum.
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == Some(sum) && block[0] != 0
}

/// What kind of archive the file at `path` is, or `None` when it is not a tar archive (then
/// ADD copies it as a plain file).
pub fn detect(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 6];
    let n = read_full(&mut f, &mut magic)?;
    let magic = &magic[..n];
    let kind = if magic.starts_with(&[0x1f, 0x8b]) {
        ArchiveKind::Gzip
    } else if magic.starts_with(b"BZh") {
        ArchiveKind::Bzip2
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ArchiveKind::Xz
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveKind::Zstd
    } else {
        ArchiveKind::Tar
    };
    f.seek(SeekFrom::Start(0))?;
    let mut d = match decoder(kind, f) {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    let mut block = vec![0u8; 512];
    let n = read_full(&mut d, &mut block).unwrap_or(0);
    Ok(is_tar_header(&block[..n]).then_some(kind))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Cleans an archive member name: no `..` above the destination, no leading `/`.
fn clean_member(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Extracts the archive at `path` into the in-image directory `dest`. Members keep their mode,
/// mtime and owner unless `owner` (`--chown`) is given. Returns the number of entries.
pub fn extract(
    path: &Path,
    kind: ArchiveKind,
    root: &RootWriter,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<u64> {
    let mut archive = tar::Archive::new(decoder(kind, File::open(path)?)?);
    root.ensure_dir(dest, None)?;
    let mut count = 0;
    // Directory mtimes are set after their contents are written.
    let mut dir_times: Vec<(String, i64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let Some(member) = clean_member(&entry.path()?) else {
            continue;
        };
        let target = format!("{}/{member}", dest.trim_end_matches('/'));
        let (uid, gid) = owner.unwrap_or((
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ));
        let attrs = Attrs {
            uid,
            gid,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime: Some((header.mtime().unwrap_or(0) as i64, 0)),
        };
        let (parent, name) = match split_path(&target) {
            Some(p) => p,
            None => continue,
        };
        // Errors name the member they come from.
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{member}: {e}"));
        let dir = root.ensure_dir(&parent, None).map_err(named)?;
        match header.entry_type() {
            tar::EntryType::Directory => {
                root.mkdir_at(&dir, &name, attrs).map_err(named)?;
                dir_times.push((target.clone(), header.mtime().unwrap_or(0) as i64));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                root.write_file_at(&dir, &name, &mut entry, attrs)
                    .map_err(named)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other(format!("{member}: symlink without target")))?;
                root.symlink_at(&dir, &name, &link, attrs).map_err(named)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name()?.ok_or_else(|| {
                    io::Error::other(format!("{member}: hard link without target"))
                })?;
                let Some(link) = clean_member(&link) else {
                    continue;
                };
                let (tparent, tname) =
                    split_path(&format!("{}/{link}", dest.trim_end_matches('/')))
                        .ok_or_else(|| io::Error::other(format!("{member}: bad hard link")))?;
                let tdir = root.ensure_dir(&tparent, None).map_err(named)?;
                root.hardlink_at(&tdir, &tname, &dir, &name).map_err(|e| {
                    named(io::Error::new(
                        e.kind(),
                        format!("hard link to {link}: {e}"),
                    ))
                })?;
            }
            _ => continue, // devices and fifos are not created by ADD
        }
        count += 1;
    }
    for (path, mtime) in dir_times.iter().rev() {
        if let Ok(fd) = root.ensure_dir(path, None) {
            root.set_mtime(&fd, (*mtime, 0))?;
        }
    }
    Ok(count)
}

/// What `rbuild build -` found on stdin.
#[derive(Debug)]
pub enum StdinInput {
    /// A (possibly compressed) tar archive, extracted into this directory: the build context.
    Context(std::path::PathBuf),
    /// Anything else: a Dockerfile, built with an empty context (as `docker build - <
    /// Dockerfile`).
    Dockerfile(Vec<u8>),
}

/// Reads all of `input` (stdin) into `dir`, and when it is a tar archive (plain, gzip, bzip2,
/// xz or zstd, recognised by content as `docker build -` does) extracts it into `dir/context`.
/// Members keep their modes and mtimes; they are owned by the caller (ownership of context
/// files plays no part in a build).
pub fn read_stdin_input(input: &mut dyn Read, dir: &Path) -> io::Result<StdinInput> {
    let spool = dir.join("stdin");
    {
        let mut f = File::create(&spool)?;
        io::copy(input, &mut f)?;
    }
    let Some(kind) = detect(&spool)? else {
        let data = std::fs::read(&spool)?;
        std::fs::remove_file(&spool)?;
        return Ok(StdinInput::Dockerfile(data));
    };
    let ctx = dir.join("context");
    std::fs::create_dir(&ctx)?;
    let root = RootWriter::open(&ctx)?;
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    extract(&spool, kind, &root, "/", Some(me))?;
    std::fs::remove_file(&spool)?;
    Ok(StdinInput::Context(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o640);
        h.set_mtime(1234);
        h.set_cksum();
        b.append_data(&mut h, "dir/hello.txt", &b"hello"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn detects_and_extracts_every_compression() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = make_tar();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let cases = [
            ("a.tar", tar.clone(), ArchiveKind::Tar),
            ("a.tgz", gz, ArchiveKind::Gzip),
            ("a.tzst", zst, ArchiveKind::Zstd),
            ("a.tbz", bz, ArchiveKind::Bzip2),
            ("a.txz", xz, ArchiveKind::Xz),
        ];
        for (name, data, kind) in cases {
            let p = tmp.path().join(name);
            std::fs::write(&p, &data).unwrap();
            assert_eq!(detect(&p).unwrap(), Some(kind), "{name}");
            let root = tempfile::tempdir().unwrap();
            let w = RootWriter::open(root.path()).unwrap();
            extract(&p, kind, &w, "/out", None).unwrap();
            assert_eq!(
                std::fs::read(root.path().join("out/dir/hello.txt")).unwrap(),
                b"hello"
            );
        }
        let plain = tmp.path().join("plain.txt");
        std::fs::write(&plain, "just text").unwrap();
        assert_eq!(detect(&plain).unwrap(), None);
    }

    #[test]
    fn member_errors_name_the_member() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_link(&mut h, "sub/hl", "missing/target").unwrap();
        let data = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.tar");
        std::fs::write(&p, &data).unwrap();
        let root = tempfile::tempdir().unwrap();
        let w = RootWriter::open(root.path()).unwrap();
        let err = extract(&p, ArchiveKind::Tar, &w, "/out", None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sub/hl: hard link to missing/target: "),
            "{err}"
        );
    }
}
