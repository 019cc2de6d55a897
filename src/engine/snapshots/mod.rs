//! Snapshots of the runtime's KV cache, so a conversation survives the requests that come
//! between its turns (a chat UI's title and tag requests, a second client).
//!
//! The runtime can only save the prompt cache of a run (`RKLLMPromptCacheParam`, written once
//! the prefill is done: SDK manual 1.3.0, 3.2.9) and load one before a run
//! (`rkllm_load_prompt_cache`), which then counts the part of the input that starts with it as
//! computed. rkllmd's worker saves a conversation's cache just before a request replaces it and
//! loads it when that conversation comes back (see `worker/snapshot_run.rs`); this module keeps
//! the files: one bounded directory (`kv-snapshot-dir`, `kv-snapshot-limit`), least recently
//! used first out, emptied at start and removed at shutdown.
//!
//! A snapshot is used only for a conversation whose rendered text starts with exactly the text
//! the snapshot holds, compared byte for byte: one client's conversation never continues from
//! another's cache. The file name is a hash of that text (names only; never the match).

mod costs;

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(super) use costs::Costs;

/// Where snapshots go and how much room they may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    /// Bytes all snapshot files may take together.
    pub limit_bytes: u64,
}

impl SnapshotConfig {
    /// The snapshots of the model in resident slot `slot` of `slots`: a directory of its own
    /// (a second set in one directory would remove the first's files), `DIR` for slot 0 and
    /// `DIR-N` beside it for slot N, and an equal share of the limit, so that all of them
    /// together stay within `kv-snapshot-limit`.
    pub fn for_slot(self, slot: usize, slots: usize) -> SnapshotConfig {
        let dir = if slot == 0 {
            self.dir
        } else {
            let mut name = self.dir.into_os_string();
            name.push(format!("-{slot}"));
            PathBuf::from(name)
        };
        SnapshotConfig {
            dir,
            limit_bytes: self.limit_bytes / u64::try_from(slots.max(1)).unwrap_or(1),
        }
    }
}

/// The extension of our files: nothing else in the directory is touched.
const EXT: &str = "kvsnap";

struct Entry {
    /// The conversation's rendered text the snapshot holds.
    text: String,
    /// Tokens the cache held.
    tokens: u32,
    path: PathBuf,
    bytes: u64,
    /// When it was last saved or restored, on `Snapshots::clock`.
    used: u64,
}

/// A snapshot chosen for a conversation.
pub(super) struct Found {
    pub path: PathBuf,
    pub tokens: u32,
    /// Bytes of the conversation's text it covers.
    pub text_len: usize,
}

/// Why a save left no snapshot.
#[derive(Debug)]
pub(super) enum SaveFailed {
    /// The runtime wrote nothing (it only logs why: a full disk, a directory gone).
    NoFile,
    /// The file alone is larger than the whole limit.
    TooLarge { bytes: u64 },
}

pub(super) struct Snapshots {
    cfg: SnapshotConfig,
    entries: Vec<Entry>,
    clock: u64,
    next_name: u64,
    /// The snapshot `find` chose for the run about to start: never evicted until `unpin`.
    pinned: Option<PathBuf>,
    pub costs: Costs,
}

impl Snapshots {
    /// Creates the directory (mode 0700) or empties an existing one of our files, left by a
    /// daemon that did not get to remove them.
    pub fn open(cfg: SnapshotConfig) -> io::Result<Snapshots> {
        match fs::DirBuilder::new().mode(0o700).create(&cfg.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&cfg.dir)?;
                if !meta.is_dir() {
                    return Err(io::Error::other(format!(
                        "{} exists and is not a directory",
                        cfg.dir.display()
                    )));
                }
                if meta.uid() != nix::unistd::geteuid().as_raw() {
                    return Err(io::Error::other(format!(
                        "{} belongs to another user",
                        cfg.dir.display()
                    )));
                }
                remove_ours(&cfg.dir);
            }
            Err(e) => return Err(e),
        }
        Ok(Snapshots {
            cfg,
            entries: Vec::new(),
            clock: 0,
            next_name: 0,
            pinned: None,
            costs: Costs::default(),
        })
    }

    /// A fresh file name for a snapshot of `text`.
    pub fn new_path(&mut self, text: &str) -> PathBuf {
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        self.next_name += 1;
        self.cfg
            .dir
            .join(format!("{:016x}-{}.{EXT}", h.finish(), self.next_name))
    }

    /// Whether a snapshot of exactly `text` is kept (it is then marked used).
    pub fn holds(&mut self, text: &str) -> bool {
        self.clock += 1;
        let now = self.clock;
        match self.entries.iter_mut().find(|e| e.text == text) {
            Some(e) => {
                e.used = now;
                true
            }
            None => false,
        }
    }

    /// Records the file the runtime was asked to write at `path`. Snapshots of earlier states
    /// of the same conversation (texts this one starts with) go, then the least recently used
    /// until all fit the limit.
    pub fn added(&mut self, text: String, tokens: u32, path: PathBuf) -> Result<(), SaveFailed> {
        let bytes = match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => m.len(),
            _ => {
                let _ = fs::remove_file(&path);
                return Err(SaveFailed::NoFile);
            }
        };
        if bytes > self.cfg.limit_bytes {
            let _ = fs::remove_file(&path);
            return Err(SaveFailed::TooLarge { bytes });
        }
        let superseded: Vec<usize> = (0..self.entries.len())
            .filter(|&i| text.starts_with(&self.entries[i].text))
            .collect();
        for i in superseded.into_iter().rev() {
            self.remove_at(i);
        }
        self.clock += 1;
        self.entries.push(Entry {
            text,
            tokens,
            path,
            bytes,
            used: self.clock,
        });
        while self.total_bytes() > self.cfg.limit_bytes {
            let Some(oldest) = (0..self.entries.len())
                .filter(|&i| self.pinned.as_ref() != Some(&self.entries[i].path))
                .min_by_key(|&i| self.entries[i].used)
            else {
                break;
            };
            log::debug!(
                "snapshot {} evicted (least recently used)",
                self.entries[oldest].path.display()
            );
            self.remove_at(oldest);
        }
        Ok(())
    }

    /// The snapshot covering most of `full` (its text is a prefix of `full`), if it covers more
    /// than `have` bytes (what the runtime's cache already shares with `full`). It stays pinned
    /// (a save before the restore cannot evict it) until `unpin`.
    pub fn find(&mut self, full: &str, have: usize) -> Option<Found> {
        let i = (0..self.entries.len())
            .filter(|&i| {
                let t = &self.entries[i].text;
                t.len() > have && full.starts_with(t.as_str())
            })
            .max_by_key(|&i| self.entries[i].text.len())?;
        self.clock += 1;
        let e = &mut self.entries[i];
        e.used = self.clock;
        self.pinned = Some(e.path.clone());
        Some(Found {
            path: e.path.clone(),
            tokens: e.tokens,
            text_len: e.text.len(),
        })
    }

    /// Ends the pin of `find`.
    pub fn unpin(&mut self) {
        self.pinned = None;
    }

    /// Forgets a snapshot the runtime could not load, and deletes its file.
    pub fn discard(&mut self, path: &Path) {
        if let Some(i) = self.entries.iter().position(|e| e.path == path) {
            self.remove_at(i);
        }
    }

    /// How many snapshots are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    fn remove_at(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        if let Err(err) = fs::remove_file(&e.path) {
            if err.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove snapshot {}: {err}", e.path.display());
            }
        }
    }
}

impl Drop for Snapshots {
    /// At shutdown: the files and the directory go (the directory only if nothing else is in it).
    fn drop(&mut self) {
        for e in self.entries.drain(..) {
            let _ = fs::remove_file(&e.path);
        }
        remove_ours(&self.cfg.dir);
        let _ = fs::remove_dir(&self.cfg.dir);
    }
}

/// Removes the files with our extension in `dir` (not following symlinks out of it).
fn remove_ours(dir: &Path) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == EXT) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests;
