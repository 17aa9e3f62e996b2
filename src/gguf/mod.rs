//! GGUF files: a validating reader over a memory map, metadata values, and a writer.

mod reader;
mod value;
pub mod writer;

pub use reader::{Gguf, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The bytes behind a parsed file: a read-only memory map (an empty file, which cannot be
/// mapped, has none). Cloning shares the map, so a thread that outlives a borrow of the file
/// (the model's background repack) can read it.
#[derive(Clone, Default)]
pub struct FileMap(Option<Arc<memmap2::Mmap>>);

impl FileMap {
    /// A map to share.
    pub fn new(map: memmap2::Mmap) -> FileMap {
        FileMap(Some(Arc::new(map)))
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Some(m) => m,
            None => &[],
        }
    }

    /// Ask the kernel to map a range's pages now, in one call, rather than fault by fault
    /// as it is read (a repack reads every byte once). Best effort (whether the kernel did):
    /// without it the reads fault.
    pub fn populate(&self, start: usize, len: usize) -> bool {
        #[cfg(target_os = "linux")]
        return self.advise_covering(memmap2::Advice::PopulateRead, start, len);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (start, len);
            false
        }
    }

    /// Ask the kernel to read a range of the map in the background (`MADV_WILLNEED`), so that
    /// reads of several ranges spread over the file wait for the disk once, not once each.
    /// Best effort.
    pub fn will_need(&self, start: usize, len: usize) {
        #[cfg(unix)]
        self.advise_covering(memmap2::Advice::WillNeed, start, len);
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    /// `advice` for the whole pages that cover a range (clipped to the map); whether the
    /// kernel took it.
    #[cfg(unix)]
    fn advise_covering(&self, advice: memmap2::Advice, start: usize, len: usize) -> bool {
        let Some(m) = &self.0 else { return false };
        let page = 4096;
        let a = start / page * page;
        let b = (start + len).min(m.len());
        b > a && m.advise_range(advice, a, b - a).is_ok()
    }

    /// Tell the kernel this process no longer needs a range of the map (its contents were
    /// copied, e.g. repacked): the pages leave our resident set and stay in the page cache.
    /// Best effort; a later read of the range faults the same bytes back in.
    pub fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let Some(m) = &self.0 {
            // Whole pages inside the range only, so nothing outside it is dropped.
            let page = 4096;
            let (a, b) = (start.div_ceil(page) * page, (start + len) / page * page);
            if b > a && b <= m.len() {
                // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only drops
                // our page-table entries, and later reads see the file's (unchanged) bytes,
                // so no reference into the map observes different contents.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
            }
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }
}

/// A GGUF file opened for reading: the map and its validated header. Tensor data are
/// zero-copy views into the map.
pub struct GgufFile {
    pub path: PathBuf,
    map: FileMap,
    pub gguf: Gguf,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::other("is a directory")));
        }
        let map = if meta.len() == 0 {
            FileMap(None)
        } else {
            // SAFETY: the map is read-only. Another process truncating or rewriting the file
            // while it is mapped is outside what we can guard against (as for every mmap
            // reader); within this process nothing writes to it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            // Where the file system caches files in large folios (ext4, xfs on recent
            // kernels), a map advised for huge pages reads a cold file in 2 MiB folios and
            // maps them whole: decode straight from the map then walks one TLB entry per
            // 2 MiB instead of per 4 KiB. Best effort.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            FileMap::new(map)
        };
        let gguf = Gguf::parse(map.bytes())?;
        Ok(GgufFile { path, map, gguf })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// The map, shared (see `FileMap`).
    pub fn map(&self) -> FileMap {
        self.map.clone()
    }

    /// See `FileMap::populate`.
    pub fn populate(&self, start: usize, len: usize) -> bool {
        self.map.populate(start, len)
    }

    /// See `FileMap::will_need`.
    pub fn will_need(&self, start: usize, len: usize) {
        self.map.will_need(start, len)
    }

    /// See `FileMap::release`.
    pub fn release(&self, start: usize, len: usize) {
        self.map.release(start, len)
    }

    /// A tensor's data, zero-copy.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.gguf.tensor_bytes(self.bytes(), t)
    }

    /// A tensor by name and its data.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self.gguf.tensor(name).ok_or_else(|| Error::TensorNotFound { name: name.into() })?;
        Ok((t, self.tensor_data(t)))
    }
}
