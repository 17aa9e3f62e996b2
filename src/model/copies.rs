//! Repacked copies of weight matrices, and the cache on disk that lets a later load of the
//! same file map them instead of making them again.
//!
//! A copy is made in anonymous memory, where the kernel zeroes every fresh page before the
//! repack writes it: for an 8B model that zeroing, not the repack, is most of a load (4-8 GB,
//! 1-10 s depending on how recently the machine used that memory). A load that finds the
//! copies in the cache maps them like the model file itself: nothing is zeroed or copied,
//! and the pages come from the page cache (or the disk) as the first tokens read them;
//! where the page cache holds the file in small pages (`in_small_pages`), a thread then reads
//! them into memory of our own, copy by copy, while the model runs from the map (the same
//! bytes).
//!
//! Cache file: `FERRCOPY`, u64 header length, a JSON header (format, the source file's
//! identity, and every copy's name, layout, offset and length), then the copies, each at a
//! 4 KiB boundary. It is written to a temporary name and renamed, so a reader sees a whole
//! file or none. A file is used only if its header matches the source file (path, length,
//! modification time, inode) and the copies this load wants exactly, and the first row group
//! of every copy equals what the repack makes of the model file now; otherwise it is
//! rewritten.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_kernels::repack::{self, Layout, Stores, GROUP};
use ferrite_kernels::GgmlType;
use serde_json::{json, Value};

use crate::gguf::{FileMap, GgufFile};

const MAGIC: &[u8; 8] = b"FERRCOPY";
/// Bump when a repacked layout changes (the first-group check would also catch it).
const FORMAT: u64 = 1;
const ALIGN: usize = 4096;
/// Largest header read back (a 1000-layer model's entries are well under this).
const MAX_HEADER: u64 = 64 << 20;

/// Copies of fewer bytes than this are made at every load rather than cached: a small
/// model repacks in milliseconds.
pub const DEFAULT_MIN_BYTES: usize = 256 << 20;

/// The memory behind repacked copies.
pub(super) enum Store {
    /// Made at this load.
    Anon(memmap2::MmapMut),
    /// Mapped from the cache file.
    File(FileMap),
}

impl std::ops::Deref for Store {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Store::Anon(m) => m,
            Store::File(m) => m.bytes(),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Anon(m) => write!(f, "Anon({} bytes)", m.len()),
            Store::File(m) => write!(f, "File({} bytes)", m.bytes().len()),
        }
    }
}

impl Store {
    /// Whether copies mapped from this cache file are to be read into memory of our own: as
    /// `in_memory` says, or (`None`) where the page cache holds the file in small pages
    /// (`in_small_pages`). Never for anonymous memory.
    pub(super) fn wants_memory(&self, in_memory: Option<bool>) -> bool {
        match self {
            Store::File(map) => in_memory.unwrap_or_else(|| in_small_pages(map)),
            Store::Anon(_) => false,
        }
    }

    /// Let the pages of a range of a cache file's map go (`FileMap::release`). Nothing for
    /// anonymous memory.
    pub(super) fn release(&self, range: Range<usize>) {
        if let Store::File(map) = self {
            map.release(range.start, range.len());
        }
    }

    /// Zeroed anonymous memory of `len` bytes (`None` if the system refuses the mapping),
    /// asking for transparent huge pages: an 8B model's copies are 4-8 GB, and faulting them
    /// in 4 KiB at a time was most of its load time.
    pub(super) fn zeroed(len: usize) -> Option<Store> {
        let map = memmap2::MmapMut::map_anon(len.max(1)).ok()?;
        // Advice only: where huge pages are off, the copy is made in small pages.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Some(Store::Anon(map))
    }
}

/// One matrix's repacked copy: a range of a store (shared by the copies of one load).
#[derive(Clone, Debug)]
pub(super) struct PackedCopy {
    pub layout: Layout,
    pub store: Arc<Store>,
    pub range: Range<usize>,
}

impl PackedCopy {
    pub fn bytes(&self) -> &[u8] {
        &self.store[self.range.clone()]
    }

    /// The copy read into anonymous memory of its own, in 2 MiB pages where the system gives
    /// them (`None` if it refuses the memory).
    pub fn in_memory(&self) -> Option<PackedCopy> {
        let Some(Store::Anon(mut mem)) = Store::zeroed(self.range.len()) else { return None };
        mem[..self.range.len()].copy_from_slice(self.bytes());
        Some(PackedCopy {
            layout: self.layout,
            store: Arc::new(Store::Anon(mem)),
            range: 0..self.range.len(),
        })
    }
}

/// A matrix that wants a copy: where its rows are in the model file.
pub(super) struct Want {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub layout: Layout,
    /// Byte range in the model file.
    pub src: Range<usize>,
    pub len: usize,
    /// The file's pages stay mapped once copied: the tied output shares the token
    /// embedding's bytes, which are read by row.
    pub keep_pages: bool,
}

impl Want {
    /// Rows of about 4 MiB of whole row groups: a copy is made in pieces (contiguous in the
    /// file and in the copy), so that one big matrix does not leave a thread idle and the
    /// file's pages can go as the copy grows.
    pub fn piece_rows(&self) -> usize {
        let row_bytes = self.src.len() / self.rows.max(1);
        ((4 << 20) / row_bytes.max(1)).max(1).div_ceil(GROUP) * GROUP
    }

    /// Rows `rows` repacked into `dst`, their place in the copy: the file's pages populated
    /// first and (unless `keep_pages`) released after, so that resident memory stays near the
    /// file size while the copies are made. False if the repack fails.
    pub fn repack_piece(&self, map: &FileMap, rows: Range<usize>, dst: &mut [u8]) -> bool {
        let row_bytes = self.src.len() / self.rows.max(1);
        let (start, len) = (self.src.start + rows.start * row_bytes, rows.len() * row_bytes);
        map.populate(start, len);
        // Ordinary stores: the kernel has just zeroed each huge page of the copy on its first
        // touch, so its lines are in cache, and non-temporal stores only pushed them out again
        // (8B loads, alternated: 0.2 s less CPU, 5-12% faster).
        let src = &map.bytes()[start..start + len];
        let ok = repack::repack_into(self.ty, rows.len(), self.cols, src, dst, Stores::Cached).is_some();
        if ok {
            self.release(map, start..start + len);
        }
        ok
    }

    /// Let the file's pages of `range` go, unless `keep_pages`.
    pub fn release(&self, map: &FileMap, range: Range<usize>) {
        if !self.keep_pages {
            map.release(range.start, range.len());
        }
    }
}

/// Where a load's copies came from, for the load line of `run`, `bench` and the others.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CopyCache {
    /// No cache: off, no copies, or copies too small to be worth one.
    #[default]
    Unused,
    /// Being made in the background, then saved to this cache file (if any).
    Making(Option<PathBuf>),
    /// Mapped from this cache file, and being read into memory in the background where the
    /// page cache holds it in small pages.
    Reading(PathBuf),
    /// Made at this load; being saved to this cache file.
    Writing(PathBuf),
    /// Mapped from this cache file.
    Read(PathBuf),
    /// Read from this cache file into memory (the page cache held it in small pages).
    ReadIntoMemory(PathBuf),
    /// Made at this load and written to this cache file, which took this long.
    Wrote(PathBuf, Duration),
    /// Made at this load; writing the cache failed (the load itself went on).
    Failed(String),
}

impl CopyCache {
    /// How copies found in the cache came in ("mapped from the cache FILE", "read from the
    /// cache FILE into memory"); None where they were not found there.
    pub fn source(&self) -> Option<String> {
        match self {
            CopyCache::Read(p) => Some(format!("mapped from the cache {}", p.display())),
            CopyCache::ReadIntoMemory(p) => Some(format!("read from the cache {} into memory", p.display())),
            _ => None,
        }
    }
}

impl std::fmt::Display for CopyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = self.source() {
            return write!(f, "repacked copies {s}");
        }
        match self {
            CopyCache::Unused | CopyCache::Read(_) | CopyCache::ReadIntoMemory(_) => Ok(()),
            CopyCache::Making(None) => write!(f, "making the repacked copies in the background"),
            CopyCache::Making(Some(p)) => {
                write!(f, "making the repacked copies in the background, to save them to {}", p.display())
            }
            CopyCache::Reading(p) => write!(f, "reading the repacked copies from the cache {}", p.display()),
            CopyCache::Writing(p) => write!(f, "saving the repacked copies to {}", p.display()),
            CopyCache::Wrote(p, t) => write!(
                f,
                "repacked copies saved to {} in {:.1} s, for faster loads of this file (--no-copy-cache: \
                 not)",
                p.display(),
                t.as_secs_f64()
            ),
            CopyCache::Failed(e) => write!(f, "could not save the repacked copies to the cache: {e}"),
        }
    }
}

/// The cache directory from the environment: `FERRITE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ferrite`, else `$HOME/.cache/ferrite`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("FERRITE_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("ferrite")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("ferrite")))
}

/// What a cache file's header says about its model file: path (canonical), length,
/// modification time, device and inode.
fn source_identity(canonical: &Path) -> Option<Value> {
    let meta = std::fs::metadata(canonical).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0u64, 0u64);
    Some(json!({
        "path": canonical.to_string_lossy(),
        "len": meta.len(),
        "mtime_ns": mtime.as_nanos() as u64,
        "dev": dev,
        "ino": ino,
    }))
}

/// One file of the cache directory (`ferrite cache`).
#[derive(Clone, Debug)]
pub struct CacheFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// The model file its header names (`None`: no readable header, or a temporary file).
    pub source: Option<PathBuf>,
    /// Whether that model file is still the one the copies were made from.
    pub current: bool,
}

/// The cache files in `dir` (whole and temporary), by name.
pub fn list(dir: &Path) -> std::io::Result<Vec<CacheFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let whole = name.ends_with(".copies");
        if !whole && !name.contains(".copies.tmp") {
            continue;
        }
        let meta = e.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let header = if whole { read_header(&e.path()) } else { None };
        let source = header.as_ref().and_then(|h| h["source"]["path"].as_str()).map(PathBuf::from);
        let current = match (&header, &source) {
            (Some(h), Some(p)) => source_identity(p).is_some_and(|now| now == h["source"]),
            _ => false,
        };
        out.push(CacheFile { path: e.path(), bytes: meta.len(), source, current });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The length of the JSON header that follows a cache file's first 16 bytes `head` (magic,
/// then the length), if they are a cache file's and the header fits in `file_len` bytes.
fn header_len(head: &[u8], file_len: u64) -> Option<usize> {
    let hlen = u64::from_le_bytes(head.get(8..16)?.try_into().ok()?);
    (&head[..8] == MAGIC && hlen <= MAX_HEADER && 16 + hlen <= file_len).then_some(hlen as usize)
}

/// A cache file's JSON header (`None` if it has none that reads).
fn read_header(path: &Path) -> Option<Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    let mut h = vec![0u8; header_len(&head, f.metadata().ok()?.len())?];
    f.read_exact(&mut h).ok()?;
    serde_json::from_slice(&h).ok()
}

/// FNV-1a, 64 bits: a stable name for a cache file (the standard library's hasher may
/// change between releases).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The cache file for a model file and a set of copies, and what its header must hold.
pub(super) struct Key {
    pub path: PathBuf,
    header: Value,
    /// Offset of each want's copy in the file, and the file's length.
    offsets: Vec<usize>,
    total: usize,
}

impl Key {
    /// `None` when the model file cannot be identified (no metadata, no path).
    pub fn new(dir: &Path, file: &GgufFile, wants: &[Want]) -> Option<Key> {
        let canonical = std::fs::canonicalize(&file.path).ok()?;
        let source = source_identity(&canonical)?;
        let mut offsets = Vec::with_capacity(wants.len());
        let mut entries = Vec::with_capacity(wants.len());
        // The header is written first; its size bounds where the data can start. A generous
        // estimate keeps the offsets independent of the header's exact length.
        let names: usize = wants.iter().map(|w| w.name.len() + 96).sum();
        let mut at = (8192 + names).div_ceil(ALIGN) * ALIGN;
        for w in wants {
            offsets.push(at);
            entries.push(json!([w.name, format!("{:?}", w.layout), at, w.len]));
            at = (at + w.len).div_ceil(ALIGN) * ALIGN;
        }
        let header =
            json!({ "format": FORMAT, "source": source, "data_start": offsets.first(), "entries": entries });
        // One file per model path and set of copies (kernel levels that want the same copies
        // share it; a level that wants others gets its own).
        let mut id = canonical.to_string_lossy().into_owned();
        for e in &header["entries"].as_array()?[..] {
            id.push('\n');
            id.push_str(&e.to_string());
        }
        let stem = canonical.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let path = dir.join(format!("{stem}.{:016x}.copies", fnv(id.as_bytes())));
        Some(Key { path, header, offsets, total: at })
    }

    /// The copies from the cache file, mapped, if it is there and matches (see the module's
    /// doc). All of them share one `Store::File`.
    pub fn read(&self, file: &GgufFile, wants: &[Want]) -> Option<Vec<PackedCopy>> {
        let f = std::fs::File::open(&self.path).ok()?;
        if f.metadata().ok()?.len() != self.total as u64 {
            return None;
        }
        // SAFETY: read-only map of a file this program only ever creates under a temporary
        // name and renames whole; another process rewriting it in place is outside what we
        // can guard against, as for the model file's own map.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        // Before the first read: a cold file's first megabytes were read ahead in small
        // folios by the header's read, and stayed mapped by 4 KiB pages (as were 16% of a 1B
        // file's copies, from a page cache filled when memory was fragmented: its decode
        // read them 10% slower than from 2 MiB pages).
        #[cfg(target_os = "linux")]
        let _ = mmap.advise(memmap2::Advice::HugePage);
        let map = FileMap::new(mmap);
        let bytes = map.bytes();
        let hlen = header_len(bytes.get(..16)?, bytes.len() as u64)?;
        let header: Value = serde_json::from_slice(&bytes[16..16 + hlen]).ok()?;
        if header != self.header {
            return None;
        }
        // The first row group of every copy, repacked from the model file now, must be
        // what the cache holds (a stale or damaged file, or a changed layout, fails here).
        // Every range the check reads is asked for first, so that where the files have left
        // the page cache the disk reads them all at once rather than one after another (a
        // load waited 1.0-3.3 s for them one by one).
        let heads: Vec<(Range<usize>, usize)> = wants
            .iter()
            .zip(&self.offsets)
            .map(|(w, &at)| {
                let head = repack::repacked_len(w.ty, GROUP, w.cols)?;
                let src = w.src.start..w.src.start + w.src.len() / w.rows.max(1) * GROUP;
                file.will_need(src.start, src.len());
                map.will_need(at, head);
                Some((src, head))
            })
            .collect::<Option<_>>()?;
        let mut scratch = Vec::new();
        for ((w, (src, head)), &at) in wants.iter().zip(heads).zip(&self.offsets) {
            scratch.resize(head, 0);
            repack::repack_into(w.ty, GROUP, w.cols, &file.bytes()[src], &mut scratch, Stores::Cached)?;
            if bytes.get(at..at + head)? != &scratch[..] {
                return None;
            }
        }
        let store = Arc::new(Store::File(map.clone()));
        Some(
            wants
                .iter()
                .zip(&self.offsets)
                .map(|(w, &at)| PackedCopy { layout: w.layout, store: store.clone(), range: at..at + w.len })
                .collect(),
        )
    }

    /// `write`, as the load line tells it.
    pub fn save(self, copies: &[PackedCopy]) -> CopyCache {
        match self.write(copies) {
            Ok(t) => CopyCache::Wrote(self.path, t),
            Err(e) => CopyCache::Failed(format!("{}: {e}", self.path.display())),
        }
    }

    /// Write the copies to the cache file (a temporary name, renamed when whole).
    pub fn write(&self, copies: &[PackedCopy]) -> std::io::Result<Duration> {
        let t0 = Instant::now();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        remove_abandoned(&self.path);
        // Never fill the disk: the cache is a convenience, and a full disk breaks other work.
        if let Some(free) = self.path.parent().and_then(free_bytes) {
            if free < 2 * self.total as u64 {
                return Err(std::io::Error::other(format!(
                    "{:.1} GiB free, and the copies take {:.1} GiB (saved only where at least twice \
                     that is free)",
                    free as f64 / (1u64 << 30) as f64,
                    self.total as f64 / (1u64 << 30) as f64
                )));
            }
        }
        let tmp = self.path.with_extension(format!("copies.tmp{}", std::process::id()));
        let result = (|| {
            let header = serde_json::to_vec(&self.header).map_err(std::io::Error::other)?;
            let mut out =
                Chunked { file: std::fs::File::create(&tmp)?, buf: Vec::with_capacity(CHUNK), at: 0 };
            out.put(MAGIC)?;
            out.put(&(header.len() as u64).to_le_bytes())?;
            out.put(&header)?;
            for (c, &off) in copies.iter().zip(&self.offsets) {
                out.pad_to(off)?;
                out.put(c.bytes())?;
            }
            out.pad_to(self.total)?;
            out.flush()?;
            drop(out);
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else if let Some(dir) = self.path.parent() {
            // Files whose model file is gone or changed can never be used again.
            for f in list(dir).unwrap_or_default() {
                if f.path != self.path && f.source.is_some() && !f.current {
                    let _ = std::fs::remove_file(&f.path);
                }
            }
        }
        result.map(|_| t0.elapsed())
    }
}

/// Bytes free to an unprivileged user on the file system of `dir` (`None` if unknown).
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer of the right type, which
    // statvfs fills when it returns 0 (only then is it read).
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// Remove temporary files of this cache file that no writer has touched for a minute (a
/// process killed while saving leaves one behind: gigabytes).
fn remove_abandoned(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!("{}.tmp", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if stale && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Least share of a mapped cache file's bytes that the kernel must map by 2 MiB pages for the
/// map to be read in place.
const MIN_HUGE_SHARE: f64 = 0.9;

/// Whether a map of the cache file would leave more than a tenth of the copies in 4 KiB
/// pages (Linux, where transparent huge pages are not off). A page cache filled while
/// memory was fragmented holds the file in small folios, which are mapped 4 KiB at a time
/// whatever the map's advice: decode then takes a TLB miss per 4 KiB and the hardware
/// prefetcher stops at every page's end. Measured here: 1B Q4_0 decode 30.5-31.2 tokens/s
/// with 16% of its copies in small pages, 33.6-34.7 from memory of our own; 8B Q4_K_M 3.8-4.0
/// with 27%, 4.5-4.6 from memory. The whole map is faulted in (`MADV_POPULATE_READ`: a file
/// not in the page cache is read now, in 2 MiB folios where memory allows, rather than by
/// the first tokens), then its share mapped by 2 MiB pages is read from /proc/self/smaps. (A
/// sample of every eighth 2 MiB read 96% where the whole map was 73%: the sample's own reads
/// came in 2 MiB folios, the rest by readahead in small ones.)
fn in_small_pages(map: &FileMap) -> bool {
    #[cfg(target_os = "linux")]
    {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if thp.is_empty() || thp.contains("[never]") {
            return false;
        }
        if !map.populate(0, map.bytes().len()) {
            return false;
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        huge_share(&smaps, map.bytes().as_ptr() as usize).is_some_and(|share| share < MIN_HUGE_SHARE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = map;
        false
    }
}

/// The share of the resident bytes of the mapping that starts at `start` that are mapped by
/// 2 MiB pages (`FilePmdMapped` / `Rss`), from the text of /proc/<pid>/smaps.
fn huge_share(smaps: &str, start: usize) -> Option<f64> {
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    let kib = |l: &str, key: &str| -> Option<f64> {
        l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()
    };
    let (mut rss, mut pmd) = (None, None);
    // The mapping's fields, up to the next mapping's header ("start-end perms ...").
    for l in lines.take_while(|l| l.split_whitespace().next().is_some_and(|t| t.ends_with(':'))) {
        rss = rss.or(kib(l, "Rss:"));
        pmd = pmd.or(kib(l, "FilePmdMapped:"));
    }
    let (rss, pmd) = (rss?, pmd?);
    (rss > 0.0).then(|| pmd / rss)
}

/// Bytes per write of the cache file: whole 2 MiB pieces at 2 MiB offsets, so that the page
/// cache can hold the file in 2 MiB folios, which a map of it then maps whole (one TLB entry
/// each). Written as the copies come, their pieces at 4 KiB offsets made some folios small,
/// and 19% of an 8B copy ended up mapped by 4 KiB pages.
const CHUNK: usize = 2 << 20;

/// A file written in `CHUNK`s.
struct Chunked {
    file: std::fs::File,
    buf: Vec<u8>,
    /// Bytes put so far.
    at: usize,
}

impl Chunked {
    fn put(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = (CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.at += n;
            if self.buf.len() == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn pad_to(&mut self, end: usize) -> std::io::Result<()> {
        if self.at > end {
            return Err(std::io::Error::other("cache header larger than its room"));
        }
        let zeros = [0u8; ALIGN];
        while self.at < end {
            let n = (end - self.at).min(ALIGN);
            self.put(&zeros[..n])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::huge_share;

    /// Two mappings as /proc/self/smaps lists them (fields trimmed): the share is the one
    /// of the mapping asked for, FilePmdMapped over Rss, and nothing for an unknown start or
    /// a mapping with nothing resident.
    #[test]
    fn huge_share_reads_the_mapping_asked_for() {
        let smaps = "\
7f5758800000-7f5785f83000 r--s 00000000 fd:00 1234 /cache/a.copies
Size:             744972 kB
Rss:              744972 kB
FilePmdMapped:    628736 kB
VmFlags: rd sh mr mw me ms hg
7f5786000000-7f57b3f36000 r--s 00000000 fd:00 5678 /models/a.gguf
Size:             752856 kB
Rss:                   0 kB
FilePmdMapped:         0 kB
VmFlags: rd sh mr mw me ms hg
";
        let share = huge_share(smaps, 0x7f5758800000).unwrap();
        assert!((share - 628736.0 / 744972.0).abs() < 1e-12, "{share}");
        assert_eq!(huge_share(smaps, 0x7f5786000000), None);
        assert_eq!(huge_share(smaps, 0x1000), None);
    }
}
