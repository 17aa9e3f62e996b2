//! GGUF reader. Every count, length and offset read from the file is checked against the
//! bytes that remain and against caps before anything is allocated or indexed.
//!
//! Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
//! metadata (key string, u32 value type, value)*, tensor infos (name string, u32 n_dims,
//! u64 dims[n_dims], u32 type, u64 offset)*, padding to `general.alignment`, tensor data.
//! Strings are a u64 length and UTF-8 bytes; arrays a u32 element type, a u64 count and
//! the elements.

use std::collections::HashMap;

use ferrite_kernels::GgmlType;

use super::value::{Array, Value, ValueType};
use crate::error::{Error, Result};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest metadata key or tensor name accepted.
pub const MAX_NAME_LEN: u64 = 65_536;
/// Most tensors or metadata entries accepted (real models have a few thousand).
pub const MAX_COUNT: u64 = 1 << 20;
/// Deepest nesting of arrays accepted.
pub const MAX_DEPTH: u32 = 8;
pub const MAX_DIMS: u32 = 4;

/// One tensor's description. `offset` counts from the start of the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, first (fastest-varying) first, as stored.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    pub n_elements: u64,
    /// Where this tensor's info record starts in the file (for error messages).
    pub info_offset: u64,
}

impl TensorInfo {
    /// Elements per row (the first dimension).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.n_elements / self.dims[0]
    }
}

/// A parsed GGUF header: metadata and tensor infos, validated against the file's length.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    pub file_len: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                field: field(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count checked against a cap and against the bytes left (each element taking at
    /// least `min_size` bytes), so nothing is allocated for elements the file cannot hold.
    fn count(&mut self, field: &dyn Fn() -> String, min_size: u64, cap: u64) -> Result<u64> {
        let offset = self.pos as u64;
        let n = self.u64(field)?;
        let fits = self.remaining() / min_size.max(1);
        let limit = cap.min(fits);
        if n > limit {
            return Err(Error::TooLarge { field: field(), offset, value: n, limit });
        }
        Ok(n)
    }

    fn string(&mut self, field: &dyn Fn() -> String, cap: u64) -> Result<String> {
        let offset = self.pos as u64;
        let len = self.count(field, 1, cap)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { field: field(), offset })
    }

    fn value_type(&mut self, field: &dyn Fn() -> String) -> Result<ValueType> {
        let offset = self.pos as u64;
        let id = self.u32(field)?;
        ValueType::from_id(id).ok_or_else(|| Error::UnknownValueType { field: field(), offset, value: id })
    }

    fn value(&mut self, ty: ValueType, field: &dyn Fn() -> String, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::Bool => Value::Bool(self.bool(field)?),
            ValueType::String => Value::String(self.string(field, u64::MAX)?),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Array => Value::Array(self.array_value(field, depth + 1)?),
        })
    }

    fn bool(&mut self, field: &dyn Fn() -> String) -> Result<bool> {
        let offset = self.pos as u64;
        match self.array::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(Error::TooLarge {
                field: format!("{} (bool)", field()),
                offset,
                value: v as u64,
                limit: 1,
            }),
        }
    }

    fn array_value(&mut self, field: &dyn Fn() -> String, depth: u32) -> Result<Array> {
        if depth > MAX_DEPTH {
            return Err(Error::NestingTooDeep { offset: self.pos as u64, limit: MAX_DEPTH });
        }
        let ty = self.value_type(field)?;
        let n = self.count(field, ty.min_size(), u64::MAX)? as usize;
        macro_rules! collect {
            ($variant:ident, $conv:expr) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($conv(self.value(ty, field, depth)?));
                }
                Array::$variant(v)
            }};
        }
        // Each arm's closure only sees the matching Value variant.
        Ok(match ty {
            ValueType::U8 => {
                let bytes = self.take(n as u64, field)?;
                Array::U8(bytes.to_vec())
            }
            ValueType::I8 => {
                let bytes = self.take(n as u64, field)?;
                Array::I8(bytes.iter().map(|&b| b as i8).collect())
            }
            ValueType::U16 => collect!(U16, |v| if let Value::U16(x) = v { x } else { unreachable!() }),
            ValueType::I16 => collect!(I16, |v| if let Value::I16(x) = v { x } else { unreachable!() }),
            ValueType::U32 => collect!(U32, |v| if let Value::U32(x) = v { x } else { unreachable!() }),
            ValueType::I32 => collect!(I32, |v| if let Value::I32(x) = v { x } else { unreachable!() }),
            ValueType::F32 => collect!(F32, |v| if let Value::F32(x) = v { x } else { unreachable!() }),
            ValueType::Bool => collect!(Bool, |v| if let Value::Bool(x) = v { x } else { unreachable!() }),
            ValueType::String => {
                collect!(String, |v| if let Value::String(x) = v { x } else { unreachable!() })
            }
            ValueType::U64 => collect!(U64, |v| if let Value::U64(x) = v { x } else { unreachable!() }),
            ValueType::I64 => collect!(I64, |v| if let Value::I64(x) = v { x } else { unreachable!() }),
            ValueType::F64 => collect!(F64, |v| if let Value::F64(x) = v { x } else { unreachable!() }),
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(field, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

impl Gguf {
    /// Parse and validate a whole GGUF file held in `buf`.
    pub fn parse(buf: &[u8]) -> Result<Gguf> {
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.array(&|| "magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (a big-endian file: only little-endian files are supported)"
            } else if version == 1 {
                " (version 1 files predate 64-bit counts; convert them with llama.cpp)"
            } else {
                ""
            };
            return Err(Error::UnsupportedVersion { version, hint });
        }
        // Smallest tensor info: 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
        let n_tensors = c.count(&|| "tensor count".into(), 32, MAX_COUNT)?;
        // Smallest metadata entry: 8 (key length) + 4 (type) + 1 (u8 value).
        let n_kv = c.count(&|| "metadata count".into(), 13, MAX_COUNT)?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let entry_offset = c.pos as u64;
            let key = c.string(&|| format!("metadata key #{i}"), MAX_NAME_LEN)?;
            let field = || format!("metadata value {key:?}");
            let ty = c.value_type(&field)?;
            let value = c.value(ty, &field, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::DuplicateKey { key, offset: entry_offset });
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) => *a as u64,
            Some((_, v)) => return Err(Error::BadAlignmentType { found: v.value_type().name() }),
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(Error::BadAlignment { value: alignment });
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let info_offset = c.pos as u64;
            let name = c.string(&|| format!("tensor #{i} name"), MAX_NAME_LEN)?;
            let field = || format!("tensor {name:?}");
            let n_dims_offset = c.pos as u64;
            let n_dims = c.u32(&field)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::BadDimCount { tensor: name, offset: n_dims_offset, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&field)?);
            }
            let type_offset = c.pos as u64;
            let type_id = c.u32(&field)?;
            let offset = c.u64(&field)?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| Error::UnknownTensorType {
                tensor: name.clone(),
                offset: type_offset,
                value: type_id,
            })?;
            if let Some(index) = dims.iter().position(|&d| d == 0) {
                return Err(Error::ZeroDim { tensor: name, offset: n_dims_offset, index, value: 0 });
            }
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| Error::ElementOverflow {
                    tensor: name.clone(),
                    offset: n_dims_offset,
                    dims: dims.clone(),
                })?;
            let block = ty.block_size() as u64;
            if dims[0] % block != 0 {
                return Err(Error::RowNotBlockMultiple {
                    tensor: name,
                    offset: n_dims_offset,
                    ty: ty.name(),
                    row: dims[0],
                    block: ty.block_size(),
                });
            }
            let size = (n_elements / block).checked_mul(ty.type_size() as u64).ok_or_else(|| {
                Error::ElementOverflow { tensor: name.clone(), offset: n_dims_offset, dims: dims.clone() }
            })?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::DuplicateTensor { name, offset: info_offset });
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size, n_elements, info_offset });
        }

        let file_len = buf.len() as u64;
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(Error::MisalignedTensor {
                    tensor: t.name.clone(),
                    data_offset: t.offset,
                    alignment,
                });
            }
            let end =
                data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.size)).ok_or_else(|| {
                    Error::TensorOffsetOverflow {
                        tensor: t.name.clone(),
                        data_offset: t.offset,
                        size: t.size,
                    }
                })?;
            if end > file_len {
                return Err(Error::TensorOutOfFile {
                    tensor: t.name.clone(),
                    start: data_offset + t.offset,
                    size: t.size,
                    file_len,
                });
            }
        }
        let mut order: Vec<&TensorInfo> = tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        for w in order.windows(2) {
            if w[0].offset + w[0].size > w[1].offset {
                return Err(Error::TensorOverlap {
                    first: w[0].name.clone(),
                    first_start: w[0].offset,
                    first_end: w[0].offset + w[0].size,
                    second: w[1].name.clone(),
                    second_start: w[1].offset,
                });
            }
        }

        Ok(Gguf { version, metadata, tensors, alignment, data_offset, file_len, key_index, tensor_index })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingKey { key: key.into() })
    }

    fn wrong(&self, key: &str, v: &Value, expected: &'static str) -> Error {
        Error::WrongType { key: key.into(), found: v.type_name(), expected }
    }

    /// An unsigned integer of any width that fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        let n = v.as_u64().ok_or_else(|| self.wrong(key, v, "unsigned integer"))?;
        u32::try_from(n).map_err(|_| Error::OutOfRange { key: key.into(), value: n.to_string() })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong(key, v, "unsigned integer"))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| self.wrong(key, v, "number"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.wrong(key, v, "bool")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, v, "string"))
    }

    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong(key, v, "array"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The architecture (`general.architecture`), if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(|v| v.as_str())
    }

    /// `{arch}.{suffix}`, e.g. `arch_key("block_count")` = "llama.block_count".
    pub fn arch_key(&self, suffix: &str) -> String {
        format!("{}.{}", self.architecture().unwrap_or("llama"), suffix)
    }

    /// The tensor's bytes within `buf` (the same buffer that was parsed). Bounds were
    /// checked by `parse`.
    pub fn tensor_bytes<'a>(&self, buf: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        let start = (self.data_offset + t.offset) as usize;
        &buf[start..start + t.size as usize]
    }
}
