use super::*;
use crate::lifecycle::testdir::TempDir;

fn store(dir: &TempDir, limit_bytes: u64) -> Snapshots {
    Snapshots::open(SnapshotConfig {
        dir: dir.join("snaps"),
        limit_bytes,
    })
    .unwrap()
}

/// Stands in for the runtime writing its prompt cache.
fn save(s: &mut Snapshots, text: &str, bytes: usize) -> Result<PathBuf, SaveFailed> {
    let path = s.new_path(text);
    fs::write(&path, vec![b'x'; bytes]).unwrap();
    s.added(text.to_owned(), 10, path.clone()).map(|()| path)
}

#[test]
fn only_a_conversation_that_starts_with_the_exact_text_finds_it() {
    let dir = TempDir::new("snap-find");
    let mut s = store(&dir, 1 << 20);
    save(&mut s, "<s>A</s><u>hi</u><a>hello", 100).unwrap();
    assert!(s
        .find("<s>A</s><u>hi</u><a>hello</a><u>more</u>", 0)
        .is_some());
    assert!(s
        .find("<s>B</s><u>hi</u><a>hello</a><u>more</u>", 0)
        .is_none());
    assert!(
        s.find("<s>A</s><u>hi</u><a>hel", 0).is_none(),
        "shorter than it"
    );
    let full = "<s>A</s><u>hi</u><a>hello</a>";
    assert!(
        s.find(full, "<s>A</s><u>hi</u><a>hello".len()).is_none(),
        "the cache already shares as much"
    );
}

#[test]
fn the_least_recently_used_go_first_when_over_the_limit() {
    let dir = TempDir::new("snap-lru");
    let mut s = store(&dir, 300);
    let a = save(&mut s, "A", 100).unwrap();
    let b = save(&mut s, "B", 100).unwrap();
    let c = save(&mut s, "C", 100).unwrap();
    assert!(
        s.find("A and more", 0).is_some(),
        "A used again: B is now the oldest"
    );
    s.unpin();
    let d = save(&mut s, "D", 100).unwrap();
    assert!(!b.exists(), "B evicted");
    assert!(a.exists() && c.exists() && d.exists());
    assert!(s.find("B and more", 0).is_none());
    let e = save(&mut s, "E", 150).unwrap();
    assert!(!c.exists() && !a.exists(), "C, then A");
    assert!(d.exists() && e.exists());
}

#[test]
fn the_snapshot_about_to_be_restored_is_not_evicted_by_a_save_before_it() {
    let dir = TempDir::new("snap-pin");
    let mut s = store(&dir, 150);
    let a = save(&mut s, "A", 100).unwrap();
    assert!(s.find("A and more", 0).is_some());
    let b = save(&mut s, "B", 100).unwrap();
    assert!(a.exists(), "pinned");
    assert!(!b.exists(), "the only other one goes");
    s.unpin();
    let c = save(&mut s, "C", 100).unwrap();
    assert!(!a.exists() && c.exists());
}

#[test]
fn a_later_state_of_the_conversation_replaces_the_earlier() {
    let dir = TempDir::new("snap-supersede");
    let mut s = store(&dir, 1 << 20);
    let first = save(&mut s, "<u>hi</u><a>hello", 100).unwrap();
    save(&mut s, "<u>hi</u><a>hello</a><u>more</u><a>ok", 100).unwrap();
    assert!(!first.exists());
    assert_eq!(s.entries.len(), 1);
}

#[test]
fn no_file_or_an_empty_one_is_no_snapshot() {
    let dir = TempDir::new("snap-nofile");
    let mut s = store(&dir, 1 << 20);
    let path = s.new_path("A");
    assert!(matches!(
        s.added("A".into(), 3, path.clone()),
        Err(SaveFailed::NoFile)
    ));
    assert!(matches!(save(&mut s, "A", 0), Err(SaveFailed::NoFile)));
    assert!(!path.exists() && s.entries.is_empty());
    drop(s);
    let mut s = store(&dir, 1000);
    assert!(matches!(
        save(&mut s, "B", 2000),
        Err(SaveFailed::TooLarge { bytes: 2000 })
    ));
    assert_eq!(fs::read_dir(dir.join("snaps")).unwrap().count(), 0);
}

#[test]
fn leftovers_are_removed_at_start_and_everything_at_shutdown() {
    let dir = TempDir::new("snap-life");
    fs::create_dir(dir.join("snaps")).unwrap();
    fs::write(dir.join("snaps/old.kvsnap"), "x").unwrap();
    let mut s = store(&dir, 1 << 20);
    assert!(!dir.join("snaps/old.kvsnap").exists());
    save(&mut s, "A", 10).unwrap();
    drop(s);
    assert!(!dir.join("snaps").exists());
}

#[test]
fn a_path_that_is_not_a_directory_is_refused() {
    let dir = TempDir::new("snap-notdir");
    fs::write(dir.join("snaps"), "x").unwrap();
    let e = Snapshots::open(SnapshotConfig {
        dir: dir.join("snaps"),
        limit_bytes: 10,
    })
    .err()
    .expect("refused");
    assert!(e.to_string().contains("not a directory"), "{e}");
}

/// Two resident models must not share a directory: opening the second would remove the
/// first's files, and dropping either would remove the other's.
#[test]
fn each_resident_slot_has_its_own_directory_and_a_share_of_the_limit() {
    let cfg = SnapshotConfig {
        dir: PathBuf::from("/run/rkllmd/kv"),
        limit_bytes: 3000,
    };
    let first = cfg.clone().for_slot(0, 3);
    assert_eq!(first.dir, PathBuf::from("/run/rkllmd/kv"));
    assert_eq!(first.limit_bytes, 1000);
    assert_eq!(
        cfg.clone().for_slot(2, 3).dir,
        PathBuf::from("/run/rkllmd/kv-2")
    );
    assert_eq!(cfg.for_slot(0, 1).limit_bytes, 3000);
}
