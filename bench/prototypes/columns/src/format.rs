//! The one file container every column file uses: a fixed header, a table
//! of sections, and the sections, each 8-byte aligned so that a memory map
//! (page-aligned) can be read as `&[u32]` in place.
//!
//! ```text
//! 0   magic  b"TALLYCF1"
//! 8   version u32, kind u32, section count u32, crc32 u32 (of bytes 32..)
//! 24  file length u64
//! 32  per section: offset u64, length u64 (bytes)
//!     sections
//! ```
//! Little-endian only. A short, misaligned, mis-sized or corrupt file is an
//! [`Error`], never a panic.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

#[cfg(not(target_endian = "little"))]
compile_error!("column files are little-endian and read in place");

pub const MAGIC: &[u8; 8] = b"TALLYCF1";
pub const VERSION: u32 = 1;
const HEADER: usize = 32;

pub const KIND_DICT: u32 = 1;
pub const KIND_SETS: u32 = 2;
pub const KIND_SEGMENT: u32 = 3;
pub const KIND_SITE: u32 = 4;

#[derive(Debug)]
pub enum Error {
    Io(PathBuf, std::io::Error),
    /// The file is not what it should be; the text says how.
    Corrupt(PathBuf, String),
    Sqlite(rusqlite::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Corrupt(p, m) => write!(f, "{}: corrupt: {m}", p.display()),
            Error::Sqlite(e) => write!(f, "sqlite: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::types::FromSqlError> for Error {
    fn from(e: rusqlite::types::FromSqlError) -> Error {
        Error::Sqlite(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(e),
        ))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Sqlite(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One opened file, mapped read-only.
pub struct Container {
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

impl Container {
    /// Maps `path` and checks its header, section table and (if `verify`)
    /// its checksum, which reads the whole file once.
    pub fn open(path: &Path, kind: u32, verify: bool) -> Result<Container> {
        let io = |e| Error::Io(path.to_path_buf(), e);
        let bad = |m: String| Error::Corrupt(path.to_path_buf(), m);
        let file = File::open(path).map_err(io)?;
        // SAFETY: column files are written once to a temporary name and
        // renamed into place, never modified after; the map is read-only.
        // (Another process truncating the file would still be undefined
        // behaviour: the usual caveat of any memory map.)
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let b: &[u8] = &map;
        if b.len() < HEADER {
            return Err(bad(format!("{} bytes, shorter than a header", b.len())));
        }
        if &b[0..8] != MAGIC {
            return Err(bad("not a column file (magic)".into()));
        }
        let (version, got_kind, n, crc) =
            (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16), u32_at(b, 20));
        if version != VERSION {
            return Err(bad(format!("version {version}, expected {VERSION}")));
        }
        if got_kind != kind {
            return Err(bad(format!("kind {got_kind}, expected {kind}")));
        }
        if u64_at(b, 24) != b.len() as u64 {
            return Err(bad(format!(
                "length {} but header says {}",
                b.len(),
                u64_at(b, 24)
            )));
        }
        let table_end = (n as usize)
            .checked_mul(16)
            .and_then(|t| t.checked_add(HEADER))
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad(format!("{n} sections do not fit")))?;
        let mut sections = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let off = u64_at(b, HEADER + 16 * i);
            let len = u64_at(b, HEADER + 16 * i + 8);
            let end = off.checked_add(len).filter(|&e| e <= b.len() as u64);
            if end.is_none() || off < table_end as u64 || !off.is_multiple_of(8) {
                return Err(bad(format!(
                    "section {i} at {off}+{len} is outside the file"
                )));
            }
            sections.push((off as usize, len as usize));
        }
        if verify {
            let got = crc32fast::hash(&b[HEADER..]);
            if got != crc {
                return Err(bad(format!("checksum {got:08x}, header says {crc:08x}")));
            }
        }
        Ok(Container {
            path: path.to_path_buf(),
            map,
            sections,
        })
    }

    pub fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::Corrupt(self.path.clone(), message.into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sections(&self) -> usize {
        self.sections.len()
    }

    pub fn bytes(&self, i: usize) -> Result<&[u8]> {
        let &(off, len) = self
            .sections
            .get(i)
            .ok_or_else(|| self.corrupt(format!("no section {i}")))?;
        Ok(&self.map[off..off + len])
    }

    pub fn u32s(&self, i: usize) -> Result<&[u32]> {
        bytemuck::try_cast_slice(self.bytes(i)?)
            .map_err(|e| self.corrupt(format!("section {i} as u32: {e:?}")))
    }

    pub fn u64s(&self, i: usize) -> Result<&[u64]> {
        bytemuck::try_cast_slice(self.bytes(i)?)
            .map_err(|e| self.corrupt(format!("section {i} as u64: {e:?}")))
    }

    /// Section `i` as `u32`s, exactly `len` of them.
    pub fn u32s_of(&self, i: usize, len: usize) -> Result<&[u32]> {
        let s = self.u32s(i)?;
        if s.len() != len {
            return Err(self.corrupt(format!("section {i}: {} values, expected {len}", s.len())));
        }
        Ok(s)
    }

    pub fn u8s_of(&self, i: usize, len: usize) -> Result<&[u8]> {
        let s = self.bytes(i)?;
        if s.len() != len {
            return Err(self.corrupt(format!("section {i}: {} bytes, expected {len}", s.len())));
        }
        Ok(s)
    }
}

/// A section to write.
pub enum Section<'a> {
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

/// Writes a container to `path` atomically (temporary file, fsync, rename).
/// Returns its size in bytes.
pub fn write(path: &Path, kind: u32, sections: &[Section<'_>]) -> Result<u64> {
    let io = |e| Error::Io(path.to_path_buf(), e);
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
    header.extend_from_slice(&kind.to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    header.extend_from_slice(&(offset as u64).to_le_bytes());
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(offset as u64)
}
