//! GGUF writer: metadata of every value type and tensor data with alignment padding.
//! The header (with every tensor's offset) is written first, then the data in order, so a
//! model can be streamed to disk one tensor at a time.

use std::io::{self, Write};

use ferrite_kernels::GgmlType;

use super::value::{Array, Value};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    size: u64,
    offset: u64,
}

pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
    data_len: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter { version: 3, alignment: 32, metadata: Vec::new(), tensors: Vec::new(), data_len: 0 }
    }

    /// Add a metadata entry. `general.alignment` (u32) also sets the data alignment.
    pub fn add(&mut self, key: &str, value: Value) -> &mut Self {
        if key == "general.alignment" {
            if let Value::U32(a) = value {
                assert!(a.is_power_of_two(), "alignment must be a power of two");
                assert!(self.tensors.is_empty(), "set the alignment before adding tensors");
                self.alignment = a as u64;
            }
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Declare a tensor (dims first dimension first). Data must be written in the same order.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> &mut Self {
        let n: u64 = dims.iter().product();
        let size = n / ty.block_size() as u64 * ty.type_size() as u64;
        let offset = self.data_len.div_ceil(self.alignment) * self.alignment;
        self.data_len = offset + size;
        self.tensors.push(PendingTensor { name: name.to_string(), dims: dims.to_vec(), ty, size, offset });
        self
    }

    /// Number of tensors declared.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Bytes of tensor `i`'s data.
    pub fn tensor_size(&self, i: usize) -> u64 {
        self.tensors[i].size
    }

    /// Write the header, tensor infos and padding up to the data section.
    pub fn write_header(&self, w: &mut impl Write) -> io::Result<u64> {
        let mut buf = Vec::new();
        buf.extend_from_slice(b"GGUF");
        buf.extend_from_slice(&self.version.to_le_bytes());
        buf.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_string(&mut buf, k);
            buf.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            write_value(&mut buf, v);
        }
        for t in &self.tensors {
            write_string(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            buf.extend_from_slice(&t.ty.id().to_le_bytes());
            buf.extend_from_slice(&t.offset.to_le_bytes());
        }
        let n = buf.len() as u64;
        let pad = n.div_ceil(self.alignment) * self.alignment - n;
        buf.resize((n + pad) as usize, 0);
        w.write_all(&buf)?;
        Ok(n + pad)
    }

    /// Write tensor `i`'s data (padding before it as needed). `pos` is the number of data
    /// bytes written so far; returns the new count.
    pub fn write_tensor_data(&self, w: &mut impl Write, i: usize, pos: u64, data: &[u8]) -> io::Result<u64> {
        let t = &self.tensors[i];
        if data.len() as u64 != t.size {
            return Err(io::Error::other(format!(
                "tensor {:?}: {} bytes given, {} expected",
                t.name,
                data.len(),
                t.size
            )));
        }
        if pos > t.offset {
            return Err(io::Error::other(format!("tensor {:?} written out of order", t.name)));
        }
        w.write_all(&vec![0u8; (t.offset - pos) as usize])?;
        w.write_all(data)?;
        Ok(t.offset + t.size)
    }

    /// Write the whole file with every tensor's data given in order.
    pub fn write_all(&self, w: &mut impl Write, data: &[&[u8]]) -> io::Result<()> {
        assert_eq!(data.len(), self.tensors.len(), "one data slice per tensor");
        self.write_header(w)?;
        let mut pos = 0;
        for (i, d) in data.iter().enumerate() {
            pos = self.write_tensor_data(w, i, pos, d)?;
        }
        Ok(())
    }

    pub fn to_bytes(&self, data: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_all(&mut out, data).expect("writing to a Vec cannot fail");
        out
    }
}

fn write_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => write_string(buf, s),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => write_array(buf, a),
    }
}

fn write_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, |$x:ident| $body:expr) => {
            for $x in $v {
                $body;
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => each!(v, |x| buf.push(*x as u8)),
        Array::U16(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |x| buf.push(*x as u8)),
        Array::String(v) => each!(v, |x| write_string(buf, x)),
        Array::U64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::Array(v) => each!(v, |x| write_array(buf, x)),
    }
}
