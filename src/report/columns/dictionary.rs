//! A site's strings and attribute sets, each kept once for all its days, so
//! segments hold small numbers and a breakdown over months adds counts by
//! number, reading strings only for the rows it shows.
//!
//! ```text
//! dict-GEN.tcf   u32 offsets (n + 1); string bytes. Id 0 is the missing value.
//! sets-GEN.tcf   u32 × ATTRIBUTES per attribute set (VisitColumn::ALL[2..], as ids)
//! ```
//! Both only grow: an append copies what the site file says is committed,
//! adds what the day brings, and writes the whole under a new generation.
//! The site file (the commit point) says how many of each are committed.

use std::collections::HashMap;
use std::path::Path;

use super::ColumnError;
use super::container::{Container, Kind, Section, write};

/// Dictionary id of a missing value.
pub(super) const NONE: u32 = 0;
/// Visit attributes in a set: [`crate::report::model::VisitColumn::ALL`]
/// after the entry and exit page, which are per visit.
pub(super) const ATTRIBUTES: usize = 15;

/// A site's dictionary, mapped.
pub(super) struct Dictionary {
    c: Container,
    len: usize,
}

impl Dictionary {
    /// Opens the dictionary with its first `len` strings committed, checking
    /// their offsets and UTF-8 once, so [`Dictionary::get`] need not.
    pub(super) fn open(path: &Path, len: usize) -> Result<Dictionary, ColumnError> {
        let c = Container::open(path, Kind::Dictionary)?;
        let offsets: &[u32] = c.cast(0)?;
        let bytes = c.bytes(1)?;
        if len == 0 || offsets.len() < len + 1 || offsets[0] != 0 {
            return Err(c.damaged(format!("{} offsets for {len} strings", offsets.len())));
        }
        // Every slice through `get`: offsets may go past the strings and
        // come back down in a file whose checksum holds.
        let end = offsets[len] as usize;
        if bytes
            .get(..end)
            .is_none_or(|b| std::str::from_utf8(b).is_err())
        {
            return Err(c.damaged("strings past the file, or not UTF-8"));
        }
        for w in offsets[..=len].windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if bytes
                .get(a..b)
                .is_none_or(|s| std::str::from_utf8(s).is_err())
            {
                return Err(c.damaged("string offsets"));
            }
        }
        Ok(Dictionary { c, len })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The string of `id`; `None` for the missing value or an id past the
    /// committed ones.
    pub(super) fn get(&self, id: u32) -> Option<&str> {
        if id == NONE || id as usize >= self.len {
            return None;
        }
        let offsets: &[u32] = self.c.cast(0).ok()?;
        let bytes = self.c.bytes(1).ok()?;
        let (a, b) = (
            *offsets.get(id as usize)? as usize,
            *offsets.get(id as usize + 1)? as usize,
        );
        std::str::from_utf8(bytes.get(a..b)?).ok()
    }
}

/// A site's attribute sets, mapped.
pub(super) struct Sets {
    c: Container,
    len: usize,
}

impl Sets {
    pub(super) fn open(path: &Path, len: usize) -> Result<Sets, ColumnError> {
        let c = Container::open(path, Kind::Sets)?;
        if c.cast::<u32>(0)?.len() < len * ATTRIBUTES {
            return Err(c.damaged("fewer attribute sets than the site file says"));
        }
        Ok(Sets { c, len })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every set's ids, [`ATTRIBUTES`] per set.
    pub(super) fn table(&self) -> &[u32] {
        self.c
            .cast::<u32>(0)
            .ok()
            .and_then(|t| t.get(..self.len * ATTRIBUTES))
            .unwrap_or(&[])
    }
}

/// The dictionary and sets as an append grows them: what was committed,
/// and lookups from string (or set) to id for what the day brings.
pub(super) struct Interner {
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    ids: HashMap<Box<str>, u32>,
    sets: Vec<u32>,
    set_ids: HashMap<[u32; ATTRIBUTES], u32>,
}

impl Interner {
    /// An empty dictionary: only the missing value.
    pub(super) fn new() -> Interner {
        Interner {
            offsets: vec![0, 0],
            bytes: Vec::new(),
            ids: HashMap::new(),
            sets: Vec::new(),
            set_ids: HashMap::new(),
        }
    }

    /// The committed strings and sets of a site.
    pub(super) fn load(dict: &Dictionary, sets: &Sets) -> Result<Interner, ColumnError> {
        let mut i = Interner::new();
        for id in 1..dict.len() as u32 {
            let s = dict
                .get(id)
                .ok_or_else(|| dict.c.damaged(format!("no string {id}")))?;
            if i.id(Some(s))? != id {
                return Err(dict.c.damaged(format!("string {id} is there twice")));
            }
        }
        for (n, set) in sets.table().chunks_exact(ATTRIBUTES).enumerate() {
            let mut key = [NONE; ATTRIBUTES];
            key.copy_from_slice(set);
            if i.set_id(key) as usize != n {
                return Err(sets.c.damaged(format!("set {n} is there twice")));
            }
        }
        Ok(i)
    }

    pub(super) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(super) fn sets_len(&self) -> usize {
        self.sets.len() / ATTRIBUTES
    }

    /// The id of `s`, added if new; [`NONE`] for no value.
    pub(super) fn id(&mut self, s: Option<&str>) -> Result<u32, ColumnError> {
        let Some(s) = s else { return Ok(NONE) };
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = u32::try_from(self.len()).ok();
        let end = u32::try_from(self.bytes.len() + s.len()).ok();
        let (Some(id), Some(end)) = (id, end) else {
            return Err(ColumnError::Full("the dictionary's 4 GiB"));
        };
        self.bytes.extend_from_slice(s.as_bytes());
        self.offsets.push(end);
        self.ids.insert(s.into(), id);
        Ok(id)
    }

    /// The id of `s`, if it has one.
    pub(super) fn find(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of an attribute set, added if new.
    pub(super) fn set_id(&mut self, set: [u32; ATTRIBUTES]) -> u32 {
        if let Some(&id) = self.set_ids.get(&set) {
            return id;
        }
        let id = self.sets_len() as u32;
        self.sets.extend_from_slice(&set);
        self.set_ids.insert(set, id);
        id
    }

    /// Writes the dictionary and the sets to their files.
    pub(super) fn write(&self, dict: &Path, sets: &Path) -> Result<u64, ColumnError> {
        Ok(write(
            dict,
            Kind::Dictionary,
            &[Section::U32(&self.offsets), Section::U8(&self.bytes)],
        )? + write(sets, Kind::Sets, &[Section::U32(&self.sets)])?)
    }
}
