//! A FUSE filesystem that can lose power: the power-loss test serves the relay's data
//! directory from it.
//!
//! Every file keeps two images: what the process sees (`data`) and what a disk would still hold
//! after a power cut (`durable`). `write` and `truncate` change only `data`; `fsync`/`fdatasync`
//! copy the file's changes into `durable`. Every directory likewise keeps its `entries` and
//! `durable_entries`; only `fsyncdir` makes creates, renames and unlinks in it durable, which is
//! what POSIX promises and stricter than ext4 in practice. `sync_file_range` never reaches a
//! FUSE filesystem, so a write "made durable" only by it is lost here, as it can be on a disk
//! with a volatile cache or when the file grew (the new size is metadata it does not write).
//!
//! [`PowerFs::cut`] unmounts, then throws away everything not durable:
//! - [`Cut::DropAll`]: every un-synced write and directory change is lost;
//! - [`Cut::Torn`]: each un-synced 4 KiB page, and each directory's un-synced changes, survive
//!   or not at random (writeback that had started), so the files a program sees after the cut
//!   may hold a torn mixture of old and new pages.
//!
//! Then it mounts the surviving image again at the same place. The test process holds the whole
//! filesystem in memory; nothing is written to the machine's disk.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod image;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use rand::Rng;

pub use image::Cut;
use image::{Dir, File, Image, Node, ENOENT, PAGE};

/// Nothing is cached by the kernel: every lookup and attribute read comes here.
const TTL: Duration = Duration::from_secs(0);
/// What `statfs` reports as the filesystem's size.
const CAPACITY: u64 = 8 << 30;

/// The filesystem as the FUSE session thread sees it.
struct Fs(Arc<Mutex<Image>>);

macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => return $reply.error(errno),
        }
    };
}

impl Fs {
    fn make_entry(&self, parent: u64, name: &OsStr, node: Node, mode: u32, reply: ReplyEntry) {
        let mut img = self.0.lock().unwrap();
        let ino = tri!(reply, img.make(parent, name, node, mode));
        reply.entry(&TTL, &img.attr(ino).unwrap(), 0);
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut img = self.0.lock().unwrap();
        let ino = tri!(reply, img.lookup(parent, name));
        reply.entry(&TTL, &img.attr(ino).unwrap(), 0);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.0.lock().unwrap().attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut img = self.0.lock().unwrap();
        if let Some(size) = size {
            tri!(reply, img.file(ino)).truncate(size);
        }
        if let Some(mode) = mode {
            if let Some(i) = img.inodes.get_mut(&ino) {
                i.perm = (mode & 0o7777) as u16;
            }
        }
        match img.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(parent, name, Node::File(File::default()), mode, reply);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(parent, name, Node::Dir(Dir::default()), mode, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.0.lock().unwrap().remove(parent, name, false));
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.0.lock().unwrap().remove(parent, name, true));
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut img = self.0.lock().unwrap();
        tri!(reply, img.rename(parent, name, newparent, newname, flags));
        reply.ok();
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut img = self.0.lock().unwrap();
        let ino = tri!(
            reply,
            img.make(parent, name, Node::File(File::default()), mode)
        );
        reply.created(&TTL, &img.attr(ino).unwrap(), 0, 0, 0);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut img = self.0.lock().unwrap();
        tri!(reply, img.file(ino));
        reply.opened(0, 0);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut img = self.0.lock().unwrap();
        let f = tri!(reply, img.file(ino));
        reply.data(f.read(offset.max(0) as u64, size));
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut img = self.0.lock().unwrap();
        tri!(reply, img.file(ino)).write(offset.max(0) as u64, data);
        reply.written(data.len() as u32);
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut img = self.0.lock().unwrap();
        img.syncs += 1;
        tri!(reply, img.file(ino)).sync();
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut img = self.0.lock().unwrap();
        tri!(reply, img.dir(ino));
        reply.opened(0, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut img = self.0.lock().unwrap();
        let entries: Vec<(OsString, u64)> = tri!(reply, img.dir(ino))
            .entries
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let mut all = vec![(OsString::from("."), ino), (OsString::from(".."), ino)];
        all.extend(entries);
        for (n, (name, child)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            let kind = match img.inodes.get(&child).map(|i| &i.node) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, n as i64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut img = self.0.lock().unwrap();
        img.syncs += 1;
        tri!(reply, img.dir(ino)).sync();
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let used = self.0.lock().unwrap().used();
        let blocks = CAPACITY / PAGE;
        let free = blocks.saturating_sub(used.div_ceil(PAGE));
        reply.statfs(
            blocks,
            free,
            free,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted [`Fs`] whose power can be cut.
pub struct PowerFs {
    image: Arc<Mutex<Image>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    pub cuts: u64,
}

impl PowerFs {
    /// Mounts an empty filesystem on `mountpoint` (created if missing). Needs /dev/fuse and
    /// either root or `fusermount3`; fails loudly otherwise.
    pub fn mount(mountpoint: &Path) -> Self {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mut fs = Self {
            image: Arc::new(Mutex::new(Image::new())),
            mountpoint: mountpoint.to_owned(),
            session: None,
            cuts: 0,
        };
        fs.attach();
        fs
    }

    fn attach(&mut self) {
        let options = [
            MountOption::FSName("relaybox-powerfs".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount2(Fs(self.image.clone()), &self.mountpoint, &options)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot mount the power-loss FUSE filesystem on {}: {e} (it needs /dev/fuse and root, or fusermount3 from the fuse3 package)",
                    self.mountpoint.display()
                )
            });
        self.session = Some(session);
    }

    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            // A plain unmount; a lazy one if something still holds a file open (the relay is
            // dead by now, but the kernel may not have released its files yet).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let ok = std::process::Command::new("umount")
                    .arg(&self.mountpoint)
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let lazy = std::process::Command::new("umount")
                        .arg("-l")
                        .arg(&self.mountpoint)
                        .status()
                        .expect("umount");
                    assert!(
                        lazy.success(),
                        "cannot unmount {}",
                        self.mountpoint.display()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            session.join();
        }
    }

    /// The power cut: unmount (every process using the filesystem must be dead), lose what
    /// was not durable, mount the survivors again.
    pub fn cut(&mut self, mode: Cut, rng: &mut impl Rng) {
        self.detach();
        self.image.lock().unwrap().cut(mode, rng);
        self.cuts += 1;
        self.attach();
    }

    /// fsync and fsyncdir calls served so far.
    pub fn syncs(&self) -> u64 {
        self.image.lock().unwrap().syncs
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.detach();
    }
}
