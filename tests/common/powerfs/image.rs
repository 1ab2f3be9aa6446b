//! The in-memory image behind the power-loss filesystem: inodes, each file's visible and
//! durable bytes, each directory's visible and durable entries, and what a power cut keeps.
//! No FUSE here beyond the attribute type; the adapter in `mod.rs` serves this image.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{FileAttr, FileType};
use rand::Rng;

pub(super) const ROOT: u64 = 1;
pub(super) const PAGE: u64 = 4096;

pub(super) const ENOENT: i32 = 2;
pub(super) const EEXIST: i32 = 17;
pub(super) const ENOTDIR: i32 = 20;
pub(super) const EISDIR: i32 = 21;
pub(super) const EINVAL: i32 = 22;
pub(super) const ENOTEMPTY: i32 = 39;
pub(super) const RENAME_NOREPLACE: u32 = 1;

/// How much un-synced state survives a cut.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    DropAll,
    Torn,
}

#[derive(Default)]
pub(super) struct File {
    pub(super) data: Vec<u8>,
    pub(super) durable: Vec<u8>,
    /// Byte ranges written since the last fsync.
    pub(super) dirty: Vec<(u64, u64)>,
    /// The shortest length `data` had since the last fsync (a truncate).
    pub(super) shortest: Option<u64>,
}

impl File {
    /// Up to `size` bytes from `offset`, as the process sees them.
    pub(super) fn read(&self, offset: u64, size: u32) -> &[u8] {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(size as usize).min(self.data.len());
        &self.data[start..end]
    }

    /// Writes `bytes` at `offset` (growing the file), visible now and durable after `sync`.
    pub(super) fn write(&mut self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        let end = start + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        self.dirty.push((start as u64, end as u64));
    }

    /// Sets the length; a shrink is remembered until `sync`, so a cut can undo it.
    pub(super) fn truncate(&mut self, size: u64) {
        if size < self.data.len() as u64 {
            self.shortest = Some(self.shortest.map_or(size, |s| s.min(size)));
        }
        self.data.resize(size as usize, 0);
    }

    pub(super) fn sync(&mut self) {
        if let Some(s) = self.shortest.take() {
            self.durable.truncate(s as usize);
        }
        self.durable.resize(self.data.len(), 0);
        for (start, end) in std::mem::take(&mut self.dirty) {
            let end = end.min(self.data.len() as u64) as usize;
            let start = (start as usize).min(end);
            self.durable[start..end].copy_from_slice(&self.data[start..end]);
        }
    }

    pub(super) fn cut(&mut self, mode: Cut, rng: &mut impl Rng) {
        if let Cut::Torn = mode {
            if let Some(s) = self.shortest {
                if rng.gen_bool(0.5) {
                    self.durable.truncate(s as usize);
                }
            }
            for (start, end) in std::mem::take(&mut self.dirty) {
                let end = end.min(self.data.len() as u64);
                let mut page = start / PAGE * PAGE;
                while page < end {
                    if rng.gen_bool(0.5) {
                        let (a, b) = (page.max(start) as usize, (page + PAGE).min(end) as usize);
                        if self.durable.len() < b {
                            self.durable.resize(b, 0);
                        }
                        self.durable[a..b].copy_from_slice(&self.data[a..b]);
                    }
                    page += PAGE;
                }
            }
        }
        self.dirty.clear();
        self.shortest = None;
        self.data = self.durable.clone();
    }
}

#[derive(Default)]
pub(super) struct Dir {
    pub(super) entries: BTreeMap<OsString, u64>,
    pub(super) durable_entries: BTreeMap<OsString, u64>,
}

impl Dir {
    /// `fsyncdir`: the directory's creates, renames and unlinks so far become durable.
    pub(super) fn sync(&mut self) {
        self.durable_entries = self.entries.clone();
    }
}

pub(super) enum Node {
    File(File),
    Dir(Dir),
}

pub(super) struct Inode {
    pub(super) node: Node,
    pub(super) perm: u16,
}

/// Every inode ever made; an unlinked inode stays, since a cut can bring its name back.
pub(super) struct Image {
    pub(super) inodes: HashMap<u64, Inode>,
    next: u64,
    /// fsync and fsyncdir calls, for the test's report.
    pub(super) syncs: u64,
}

impl Image {
    pub(super) fn new() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                node: Node::Dir(Dir::default()),
                perm: 0o755,
            },
        );
        Self {
            inodes,
            next: ROOT + 1,
            syncs: 0,
        }
    }

    pub(super) fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &inode.node {
            Node::File(f) => (FileType::RegularFile, f.data.len() as u64, 1),
            Node::Dir(_) => (FileType::Directory, 0, 2),
        };
        let now = SystemTime::now();
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm: inode.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    pub(super) fn dir(&mut self, ino: u64) -> Result<&mut Dir, i32> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.node) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    pub(super) fn file(&mut self, ino: u64) -> Result<&mut File, i32> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.node) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(EISDIR),
            None => Err(ENOENT),
        }
    }

    pub(super) fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.dir(parent)?.entries.get(name).copied().ok_or(ENOENT)
    }

    pub(super) fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        node: Node,
        mode: u32,
    ) -> Result<u64, i32> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(
            ino,
            Inode {
                node,
                perm: (mode & 0o7777) as u16,
            },
        );
        self.dir(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.inodes.get(&ino).map(|i| &i.node), Some(Node::Dir(d)) if d.entries.is_empty())
    }

    pub(super) fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        match (&self.inodes[&ino].node, want_dir) {
            (Node::Dir(_), false) => return Err(EISDIR),
            (Node::File(_), true) => return Err(ENOTDIR),
            (Node::Dir(d), true) if !d.entries.is_empty() => return Err(ENOTEMPTY),
            _ => {}
        }
        self.dir(parent)?.entries.remove(name);
        Ok(())
    }

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), i32> {
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(EINVAL);
        }
        let ino = self.lookup(parent, name)?;
        if let Ok(old) = self.lookup(newparent, newname) {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(EEXIST);
            }
            let src_dir = matches!(self.inodes[&ino].node, Node::Dir(_));
            match (&self.inodes[&old].node, src_dir) {
                (Node::Dir(_), false) => return Err(EISDIR),
                (Node::File(_), true) => return Err(ENOTDIR),
                (Node::Dir(_), true) if !self.is_empty_dir(old) => return Err(ENOTEMPTY),
                _ => {}
            }
        }
        self.dir(parent)?.entries.remove(name);
        self.dir(newparent)?.entries.insert(newname.to_owned(), ino);
        Ok(())
    }

    pub(super) fn used(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| match &i.node {
                Node::File(f) => f.data.len().max(f.durable.len()) as u64,
                Node::Dir(_) => PAGE,
            })
            .sum()
    }

    pub(super) fn cut(&mut self, mode: Cut, rng: &mut impl Rng) {
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            match &mut self.inodes.get_mut(&ino).unwrap().node {
                Node::File(f) => f.cut(mode, rng),
                Node::Dir(d) => {
                    let survives = matches!(mode, Cut::Torn) && rng.gen_bool(0.5);
                    if survives {
                        d.durable_entries = d.entries.clone();
                    } else {
                        d.entries = d.durable_entries.clone();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn file_with(img: &mut Image, bytes: &[u8]) -> u64 {
        let ino = img
            .make(ROOT, OsStr::new("f"), Node::File(File::default()), 0o644)
            .unwrap();
        let f = img.file(ino).unwrap();
        f.data.extend_from_slice(bytes);
        f.dirty.push((0, bytes.len() as u64));
        ino
    }

    #[test]
    fn a_cut_keeps_only_what_was_synced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut img = Image::new();
        let ino = file_with(&mut img, b"synced");
        img.file(ino).unwrap().sync();
        img.dir(ROOT).unwrap().durable_entries = img.dir(ROOT).unwrap().entries.clone();
        let f = img.file(ino).unwrap();
        f.data.extend_from_slice(b" and not");
        f.dirty.push((6, 14));
        img.make(ROOT, OsStr::new("new"), Node::File(File::default()), 0o644)
            .unwrap();
        img.cut(Cut::DropAll, &mut rng);
        assert_eq!(img.file(ino).unwrap().data, b"synced");
        assert!(img.lookup(ROOT, OsStr::new("new")).is_err());
    }

    #[test]
    fn a_truncate_is_durable_only_after_fsync() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut img = Image::new();
        let ino = file_with(&mut img, b"0123456789");
        img.file(ino).unwrap().sync();
        let f = img.file(ino).unwrap();
        f.shortest = Some(2);
        f.data.truncate(2);
        f.data.extend_from_slice(b"ab");
        f.dirty.push((2, 4));
        f.sync();
        assert_eq!(f.durable, b"01ab");
        f.shortest = Some(0);
        f.data.clear();
        img.cut(Cut::DropAll, &mut rng);
        assert_eq!(img.file(ino).unwrap().data, b"01ab");
    }

    #[test]
    fn a_unlinked_file_comes_back_unless_the_directory_was_synced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut img = Image::new();
        let ino = file_with(&mut img, b"x");
        img.dir(ROOT).unwrap().durable_entries = img.dir(ROOT).unwrap().entries.clone();
        img.remove(ROOT, OsStr::new("f"), false).unwrap();
        img.cut(Cut::DropAll, &mut rng);
        assert_eq!(img.lookup(ROOT, OsStr::new("f")), Ok(ino));
        img.rename(ROOT, OsStr::new("f"), ROOT, OsStr::new("g"), 0)
            .unwrap();
        let d = img.dir(ROOT).unwrap();
        d.durable_entries = d.entries.clone();
        img.cut(Cut::DropAll, &mut rng);
        assert!(img.lookup(ROOT, OsStr::new("f")).is_err());
        assert_eq!(img.lookup(ROOT, OsStr::new("g")), Ok(ino));
    }

    #[test]
    fn a_torn_cut_leaves_each_unsynced_page_old_or_new() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut img = Image::new();
        let pages = 64usize;
        let ino = file_with(&mut img, &vec![b'o'; pages * PAGE as usize]);
        img.file(ino).unwrap().sync();
        let f = img.file(ino).unwrap();
        f.data.iter_mut().for_each(|b| *b = b'n');
        f.dirty.push((0, pages as u64 * PAGE));
        img.cut(Cut::Torn, &mut rng);
        let data = &img.file(ino).unwrap().data;
        let kinds: Vec<u8> = data
            .chunks(PAGE as usize)
            .map(|page| {
                assert!(page.iter().all(|b| *b == page[0]), "a page is torn inside");
                page[0]
            })
            .collect();
        assert_eq!(kinds.len(), pages);
        assert!(kinds.contains(&b'o') && kinds.contains(&b'n'), "{kinds:?}");
    }
}
