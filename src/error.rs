//! Typed errors. Every rejection of a file names the field, the byte offset and the values,
//! so a user (or a test) can tell exactly what was wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version} at offset 4 (supported: 2, 3){hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },

    #[error("file truncated: {field} at offset {offset} needs {needed} bytes, only {available} left")]
    Truncated { field: String, offset: u64, needed: u64, available: u64 },

    #[error("{field} at offset {offset} is {value}, beyond the limit of {limit}")]
    TooLarge { field: String, offset: u64, value: u64, limit: u64 },

    #[error("{field} at offset {offset} has unknown value type {value}")]
    UnknownValueType { field: String, offset: u64, value: u32 },

    #[error("{field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { field: String, offset: u64 },

    #[error("metadata key {key:?} at offset {offset} appears twice")]
    DuplicateKey { key: String, offset: u64 },

    #[error("general.alignment is {value}: must be a power of two, at least 1")]
    BadAlignment { value: u64 },

    #[error("general.alignment has type {found}, expected u32")]
    BadAlignmentType { found: &'static str },

    #[error("tensor {tensor:?} at offset {offset} has unknown type id {value}")]
    UnknownTensorType { tensor: String, offset: u64, value: u32 },

    #[error("tensor {tensor:?} at offset {offset} has {n_dims} dimensions (must be 1 to 4)")]
    BadDimCount { tensor: String, offset: u64, n_dims: u32 },

    #[error("tensor {tensor:?} at offset {offset} has dimension {index} = {value} (must be 1 or more)")]
    ZeroDim { tensor: String, offset: u64, index: usize, value: u64 },

    #[error("tensor {tensor:?} at offset {offset}: element count of {dims:?} overflows")]
    ElementOverflow { tensor: String, offset: u64, dims: Vec<u64> },

    #[error("tensor {tensor:?} at offset {offset}: row length {row} is not a multiple of {ty}'s block size {block}")]
    RowNotBlockMultiple { tensor: String, offset: u64, ty: &'static str, row: u64, block: usize },

    #[error("tensor {tensor:?} data offset {data_offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor { tensor: String, data_offset: u64, alignment: u64 },

    #[error("tensor {tensor:?} data [{start}, {start}+{size}) lies outside the file ({file_len} bytes)")]
    TensorOutOfFile { tensor: String, start: u64, size: u64, file_len: u64 },

    #[error("tensor {tensor:?} data offset {data_offset} + size {size} overflows")]
    TensorOffsetOverflow { tensor: String, data_offset: u64, size: u64 },

    #[error("tensors {first:?} [{first_start}, {first_end}) and {second:?} (from {second_start}) overlap")]
    TensorOverlap { first: String, first_start: u64, first_end: u64, second: String, second_start: u64 },

    #[error("tensor name {name:?} at offset {offset} appears twice")]
    DuplicateTensor { name: String, offset: u64 },

    #[error("metadata nesting deeper than {limit} levels at offset {offset}")]
    NestingTooDeep { offset: u64, limit: u32 },

    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },

    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType { key: String, found: String, expected: &'static str },

    #[error("metadata key {key:?} = {value} is out of range")]
    OutOfRange { key: String, value: String },

    #[error("tensor {name:?} not found")]
    TensorNotFound { name: String },

    #[error("{0}")]
    Kernel(#[from] ferrite_kernels::KernelError),

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
