//! The one file container every column file uses, so that a file can be
//! read in place from a memory map and a damaged one is noticed: a fixed
//! header, a table of sections, and the sections, each 8-byte aligned so
//! that a map (page-aligned) reads as `&[u32]` or `&[u64]` without copying.
//!
//! ```text
//! 0   magic  b"TALLYCF1"
//! 8   version u32, kind u32, section count u32, crc32 u32 (of bytes 32..)
//! 24  file length u64
//! 32  per section: offset u64, length u64 (bytes)
//!     sections
//! ```
//! Little-endian only (a compile error elsewhere). A short, misaligned,
//! mis-sized or corrupt file is a [`ColumnError::Damaged`], never a panic.
//! Files are written whole to a temporary name, synced, and renamed over
//! the old one, then the directory is synced: a reader sees the old file
//! or the new one, and a map of the old one stays valid.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ColumnError;

#[cfg(not(target_endian = "little"))]
compile_error!("column files are little-endian and read in place");

const MAGIC: &[u8; 8] = b"TALLYCF1";
const VERSION: u32 = 1;
const HEADER: usize = 32;

/// What a file holds, checked at open so one kind is never read as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dictionary = 1,
    Sets = 2,
    Segment = 3,
    Site = 4,
}

/// One opened file, mapped read-only, its header and checksum checked.
pub(super) struct Container {
    path: PathBuf,
    map: Mmap,
    sections: Vec<(usize, usize)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ColumnError + '_ {
    move |source| ColumnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Container {
    /// Maps `path` and checks its header, section table and checksum (which
    /// reads the file once: files are opened once and kept mapped).
    pub(super) fn open(path: &Path, kind: Kind) -> Result<Container, ColumnError> {
        let file = File::open(path).map_err(io_error(path))?;
        // SAFETY: a map is sound while nobody changes the file under it.
        // Column files are never modified in place: each is written whole
        // to a temporary name and renamed over the old one, so an open map
        // keeps the old file's pages (a replaced or deleted file lives on
        // until its last map goes). Only this module writes the directory,
        // and only in the one process holding the store's lock
        // (`ColumnStore::open`). Beyond that, nothing here can stop another
        // program: a file changed in place gives wrong numbers but never a
        // panic or a read out of bounds (what bounds the reads is copied
        // to the heap when checked, see `Segment::open`); a mapped file
        // truncated by another program makes the next read of the lost
        // pages kill the process (SIGBUS), which no reader of a shared map
        // can prevent. So the store's files must not be restored or
        // repaired by writing over them: delete the directory instead, and
        // it is sealed again from the raw tables.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let damaged = |what: String| ColumnError::Damaged {
            path: path.to_path_buf(),
            what,
        };
        let b: &[u8] = &map;
        if b.len() < HEADER {
            return Err(damaged(format!("{} bytes, shorter than a header", b.len())));
        }
        if &b[0..8] != MAGIC {
            return Err(damaged("not a column file".into()));
        }
        let (version, got_kind, n, crc) =
            (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16), u32_at(b, 20));
        if version != VERSION {
            return Err(damaged(format!("version {version}, expected {VERSION}")));
        }
        if got_kind != kind as u32 {
            return Err(damaged(format!(
                "kind {got_kind}, expected {}",
                kind as u32
            )));
        }
        if u64_at(b, 24) != b.len() as u64 {
            return Err(damaged(format!(
                "{} bytes, the header says {}",
                b.len(),
                u64_at(b, 24)
            )));
        }
        let table_end = (n as usize)
            .checked_mul(16)
            .and_then(|t| t.checked_add(HEADER))
            .filter(|&e| e <= b.len())
            .ok_or_else(|| damaged(format!("{n} sections do not fit")))?;
        let got = crc32fast::hash(&b[HEADER..]);
        if got != crc {
            return Err(damaged(format!(
                "checksum {got:08x}, the header says {crc:08x}"
            )));
        }
        let mut sections = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let off = u64_at(b, HEADER + 16 * i);
            let len = u64_at(b, HEADER + 16 * i + 8);
            let inside = off.checked_add(len).is_some_and(|e| e <= b.len() as u64);
            if !inside || off < table_end as u64 || !off.is_multiple_of(8) {
                return Err(damaged(format!(
                    "section {i} at {off}+{len} is outside the file"
                )));
            }
            sections.push((off as usize, len as usize));
        }
        Ok(Container {
            path: path.to_path_buf(),
            map,
            sections,
        })
    }

    pub(super) fn damaged(&self, what: impl Into<String>) -> ColumnError {
        ColumnError::Damaged {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    pub(super) fn sections(&self) -> usize {
        self.sections.len()
    }

    pub(super) fn bytes(&self, i: usize) -> Result<&[u8], ColumnError> {
        let &(off, len) = self
            .sections
            .get(i)
            .ok_or_else(|| self.damaged(format!("no section {i}")))?;
        self.map
            .get(off..off + len)
            .ok_or_else(|| self.damaged(format!("section {i} is outside the file")))
    }

    /// Section `i` read in place as values of `T` (`u32`, `u64`, `[u32; N]`).
    pub(super) fn cast<T: bytemuck::AnyBitPattern>(&self, i: usize) -> Result<&[T], ColumnError> {
        bytemuck::try_cast_slice(self.bytes(i)?)
            .map_err(|e| self.damaged(format!("section {i}: {e:?}")))
    }

    /// [`Container::cast`], exactly `len` values of it.
    pub(super) fn cast_exact<T: bytemuck::AnyBitPattern>(
        &self,
        i: usize,
        len: usize,
    ) -> Result<&[T], ColumnError> {
        let s = self.cast::<T>(i)?;
        if s.len() != len {
            return Err(self.damaged(format!("section {i}: {} values, expected {len}", s.len())));
        }
        Ok(s)
    }
}

/// A section to write.
pub(super) enum Section<'a> {
    U32(&'a [u32]),
    U64(&'a [u64]),
    U8(&'a [u8]),
}

impl Section<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Section::U32(s) => bytemuck::cast_slice(s),
            Section::U64(s) => bytemuck::cast_slice(s),
            Section::U8(s) => s,
        }
    }
}

/// Writes a container to `path` whole: a temporary file, synced, renamed
/// over `path`, and the directory synced so the rename survives a crash.
/// Returns its size in bytes.
pub(super) fn write(path: &Path, kind: Kind, sections: &[Section<'_>]) -> Result<u64, ColumnError> {
    let table_end = HEADER + 16 * sections.len();
    let mut body: Vec<u8> = vec![0; table_end - HEADER];
    let mut offset = table_end;
    for (i, s) in sections.iter().enumerate() {
        let pad = (8 - offset % 8) % 8;
        body.extend(std::iter::repeat_n(0u8, pad));
        offset += pad;
        let b = s.bytes();
        body[16 * i..16 * i + 8].copy_from_slice(&(offset as u64).to_le_bytes());
        body[16 * i + 8..16 * i + 16].copy_from_slice(&(b.len() as u64).to_le_bytes());
        body.extend_from_slice(b);
        offset += b.len();
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(kind as u32).to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    header.extend_from_slice(&(offset as u64).to_le_bytes());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_error(&tmp))?;
    f.write_all(&header).map_err(io_error(&tmp))?;
    f.write_all(&body).map_err(io_error(&tmp))?;
    f.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(offset as u64)
}

/// Syncs a directory, so the names created or renamed in it last.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ColumnError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}
