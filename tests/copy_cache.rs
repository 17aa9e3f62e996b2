//! The cache of repacked copies: a second load maps the copies the first one saved, and
//! computes the same logits to the bit as copies made at load; a cache file that does not
//! match (damaged, truncated, another source file) is made again, never used.

mod common;

use std::path::{Path, PathBuf};

use ferrite::gguf::GgufFile;
use ferrite::model::{Background, CopyCache, KvCache, LoadOptions, Model, State};

fn model_path() -> PathBuf {
    let p = common::root().join("models/SmolLM2-135M-Instruct.Q4_0.gguf");
    assert!(p.exists(), "{} is missing: run scripts/make-variants.sh", p.display());
    p
}

/// Load with the cache in `dir` (any size of copies is cached), waiting for a save to end;
/// copies found in the cache mapped.
fn load(path: &Path, dir: &Path) -> (Model, CopyCache) {
    load_how(path, dir, Some(false))
}

/// `load`, copies found in the cache read into memory or mapped as `in_memory` says.
fn load_how(path: &Path, dir: &Path, in_memory: Option<bool>) -> (Model, CopyCache) {
    let opts = LoadOptions {
        repack: true,
        cache: Some((dir.to_path_buf(), 0)),
        copies_in_memory: in_memory,
        background: Default::default(),
    };
    let m = Model::load_opts(GgufFile::open(path).unwrap(), &opts).unwrap();
    let c = m.wait_copy_cache();
    (m, c)
}

/// Logits after a 20-token prompt (the batched kernels) and after each of 3 decode steps.
fn logits(m: &Model) -> Vec<Vec<u32>> {
    let prompt: Vec<u32> = (0..20).map(|i| 1 + (i * 37) % 1000).collect();
    let mut cache = KvCache::new(&m.config, 32);
    let mut state = State::new(&m.config, 32);
    let mut out = Vec::new();
    m.forward(&prompt, &mut cache, &mut state, None).unwrap();
    out.push(state.logits.iter().map(|v| v.to_bits()).collect());
    for t in [5u32, 77, 901] {
        m.forward(&[t], &mut cache, &mut state, None).unwrap();
        out.push(state.logits.iter().map(|v| v.to_bits()).collect());
    }
    out
}

fn cache_file(c: &CopyCache) -> PathBuf {
    match c {
        CopyCache::Wrote(p, _) | CopyCache::Read(p) | CopyCache::ReadIntoMemory(p) => p.clone(),
        other => panic!("expected a cache file, got {other:?}"),
    }
}

#[test]
fn second_load_maps_the_saved_copies_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_path();
    let reference = Model::load_with(GgufFile::open(&path).unwrap(), true).unwrap();
    assert_eq!(reference.copy_cache(), CopyCache::Unused);
    let want = logits(&reference);

    let (first, c1) = load(&path, dir.path());
    assert!(matches!(c1, CopyCache::Wrote(..)), "first load: {c1:?}");
    let file = cache_file(&c1);
    assert!(file.starts_with(dir.path()));
    assert!(std::fs::metadata(&file).unwrap().len() as usize >= first.repacked_bytes());
    assert_eq!(logits(&first), want, "copies made at load");

    let (second, c2) = load(&path, dir.path());
    assert_eq!(c2, CopyCache::Read(file.clone()), "second load");
    assert_eq!(second.repacked_bytes(), reference.repacked_bytes());
    assert_eq!(logits(&second), want, "copies mapped from the cache");

    // Read into memory instead of mapped (as where the page cache holds the file in small
    // pages), and as the load decides by itself: the same results.
    let (third, c3) = load_how(&path, dir.path(), Some(true));
    assert_eq!(c3, CopyCache::ReadIntoMemory(file.clone()), "third load");
    assert_eq!(logits(&third), want, "copies read from the cache into memory");
    let (fourth, c4) = load_how(&path, dir.path(), None);
    assert!(matches!(&c4, CopyCache::Read(p) | CopyCache::ReadIntoMemory(p) if *p == file), "{c4:?}");
    assert_eq!(logits(&fourth), want, "copies from the cache, mapped or read as the load chose");

    // Made in the background and saved, the logits computed while they are made; then read
    // into memory in the background, the logits computed from the map meanwhile.
    let dir2 = tempfile::tempdir().unwrap();
    let opts = |background, copies_in_memory| LoadOptions {
        repack: true,
        cache: Some((dir2.path().to_path_buf(), 0)),
        copies_in_memory,
        background,
    };
    let m = Model::load_opts(GgufFile::open(&path).unwrap(), &opts(Background::On, None)).unwrap();
    let racing = logits(&m);
    assert!(matches!(m.wait_copy_cache(), CopyCache::Wrote(..)), "made in the background");
    assert_eq!(racing, want, "while the copies were made");
    let m = Model::load_opts(GgufFile::open(&path).unwrap(), &opts(Background::Auto, Some(true))).unwrap();
    let racing = logits(&m);
    assert!(matches!(m.wait_copy_cache(), CopyCache::ReadIntoMemory(..)), "read in the background");
    assert_eq!(m.repacked_bytes(), reference.repacked_bytes());
    assert_eq!(racing, want, "while the copies were read into memory");
    assert_eq!(logits(&m), want, "after");

    // Nothing else is left in the directory (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names, vec![file]);
}

/// Damage the cache file in a few ways: each load must notice, make the copies again (same
/// logits) and leave a good file behind.
#[test]
fn a_damaged_or_stale_cache_file_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_path();
    let want = logits(&Model::load_with(GgufFile::open(&path).unwrap(), true).unwrap());
    let (_, c) = load(&path, dir.path());
    let file = cache_file(&c);
    let good = std::fs::read(&file).unwrap();
    // The first copy's first bytes: where the header says the data start.
    let hlen = u64::from_le_bytes(good[8..16].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&good[16..16 + hlen]).unwrap();
    let data = header["data_start"].as_u64().unwrap() as usize;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        ("a flipped byte in a copy", Box::new(move |b: &mut Vec<u8>| b[data + 3] ^= 0x40)),
        ("truncated", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 4096))),
        ("a bad magic", Box::new(|b: &mut Vec<u8>| b[0] = b'X')),
        (
            "a huge header length",
            Box::new(|b: &mut Vec<u8>| b[8..16].copy_from_slice(&u64::MAX.to_le_bytes())),
        ),
        ("a header that is not JSON", Box::new(move |b: &mut Vec<u8>| b[16..16 + hlen].fill(b'{'))),
        (
            "another format",
            Box::new(move |b: &mut Vec<u8>| {
                let h = String::from_utf8(b[16..16 + hlen].to_vec()).unwrap().replacen(
                    "\"format\":1",
                    "\"format\":9",
                    1,
                );
                assert_eq!(h.len(), hlen);
                b[16..16 + hlen].copy_from_slice(h.as_bytes());
            }),
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ];
    for (what, damage) in damages {
        let mut bytes = good.clone();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let (m, c) = load(&path, dir.path());
        assert!(matches!(c, CopyCache::Wrote(..)), "{what}: {c:?}");
        assert_eq!(logits(&m), want, "{what}");
        assert_eq!(std::fs::read(&file).unwrap(), good, "{what}: the file made again");
    }

    // The source file changed (a copy of it with another modification time): its own file.
    let src_dir = tempfile::tempdir().unwrap();
    let copy = src_dir.path().join("model.gguf");
    std::fs::copy(&path, &copy).unwrap();
    let (_, c) = load(&copy, dir.path());
    assert!(matches!(c, CopyCache::Wrote(..)), "another path: {c:?}");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&copy).unwrap().set_modified(old).unwrap();
    let (_, c) = load(&copy, dir.path());
    assert!(matches!(c, CopyCache::Wrote(..)), "the same path, modified: {c:?}");
    let (_, c) = load(&copy, dir.path());
    assert!(matches!(c, CopyCache::Read(..)), "unchanged since: {c:?}");
    let copy_cache = cache_file(&c);

    // The listing tells current files from stale ones; a save removes the stale ones.
    let listed = ferrite::model::list_cache(dir.path()).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|f| f.current && f.source.is_some()), "{listed:?}");
    std::fs::remove_file(&copy).unwrap();
    let listed = ferrite::model::list_cache(dir.path()).unwrap();
    let stale: Vec<_> = listed.iter().filter(|f| !f.current).map(|f| f.path.clone()).collect();
    assert_eq!(stale, vec![copy_cache.clone()], "the copy's file is stale once the copy is gone");
    std::fs::remove_file(&file).unwrap();
    let (_, c) = load(&path, dir.path());
    assert!(matches!(c, CopyCache::Wrote(..)), "{c:?}");
    assert!(!copy_cache.exists(), "a save removes the files of models that are gone");
    assert!(file.exists());
}

#[test]
fn an_unwritable_cache_is_reported_and_the_model_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let path = model_path();
    let (m, c) = load(&path, &blocked.join("cache"));
    assert!(matches!(c, CopyCache::Failed(_)), "{c:?}");
    assert!(m.repacked_bytes() > 0);
    let want = logits(&Model::load_with(GgufFile::open(&path).unwrap(), true).unwrap());
    assert_eq!(logits(&m), want);
}

#[test]
fn abandoned_temporary_files_are_removed_and_small_copies_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_path();
    // Copies under the threshold: no file.
    let opts = LoadOptions {
        repack: true,
        cache: Some((dir.path().to_path_buf(), usize::MAX)),
        copies_in_memory: None,
        background: Default::default(),
    };
    let m = Model::load_opts(GgufFile::open(&path).unwrap(), &opts).unwrap();
    assert_eq!(m.wait_copy_cache(), CopyCache::Unused);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let (_, c) = load(&path, dir.path());
    let file = cache_file(&c);
    // A killed writer's temporary file, an hour old, and a live writer's, new.
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let old = dir.path().join(format!("{name}.tmp4242"));
    let new = dir.path().join(format!("{name}.tmp4343"));
    std::fs::write(&old, b"partial").unwrap();
    std::fs::write(&new, b"partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(hour_ago).unwrap();
    std::fs::remove_file(&file).unwrap();
    let (_, c) = load(&path, dir.path());
    assert!(matches!(c, CopyCache::Wrote(..)), "{c:?}");
    assert!(!old.exists(), "the abandoned file is removed");
    assert!(new.exists(), "a file being written is left alone");
}

#[test]
fn the_cache_command_lists_and_clears_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_path();
    let (_, c) = load(&path, dir.path());
    let file = cache_file(&c);
    let run = |args: &[&str]| {
        let out = common::ferrite().args(args).env("FERRITE_CACHE_DIR", dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = run(&["cache"]);
    let canonical = std::fs::canonicalize(&path).unwrap();
    assert!(listed.contains("1 files"), "{listed}");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let line = listed.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.ends_with(&format!("copies of {}", canonical.display())), "{line}");
    let cleared = run(&["cache", "--clear"]);
    assert!(cleared.starts_with("removed 1 files"), "{cleared}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(run(&["cache"]).contains("0 files"));
}
