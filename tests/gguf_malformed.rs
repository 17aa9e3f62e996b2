//! Malformed files, generated from a valid one: each is rejected with the expected error
//! variant, never a panic; `ferrite inspect` exits 1 with one `error:` line on each.

mod common;

use ferrite::gguf::Gguf;
use ferrite::Error;

/// A hand-assembled GGUF file, field by field, so each case can break one field.
#[derive(Clone)]
struct Raw {
    magic: [u8; 4],
    version: u32,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<RawTensor>,
    alignment: usize,
    data: Vec<u8>,
}

#[derive(Clone)]
struct RawTensor {
    name: Vec<u8>,
    n_dims: u32,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut v = string(key.as_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn tensor(name: &str, dims: &[u64], ty: u32, offset: u64) -> RawTensor {
    RawTensor { name: name.as_bytes().to_vec(), n_dims: dims.len() as u32, dims: dims.to_vec(), ty, offset }
}

impl Raw {
    fn valid() -> Raw {
        let mut arr = 8u32.to_le_bytes().to_vec(); // array of strings
        arr.extend_from_slice(&2u64.to_le_bytes());
        arr.extend(string(b"hello"));
        arr.extend(string(b"world"));
        Raw {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: vec![
                kv("general.architecture", 8, &string(b"llama")),
                kv("llama.block_count", 4, &2u32.to_le_bytes()),
                kv("x.strings", 9, &arr),
                kv("x.f32", 6, &1.5f32.to_le_bytes()),
            ],
            tensors: vec![
                tensor("a", &[32, 2], 2, 0),    // Q4_0: 2 blocks x 18 bytes = 36
                tensor("b", &[8], 0, 64),       // F32: 32 bytes
                tensor("c", &[4, 2, 1], 1, 96), // F16: 16 bytes
            ],
            alignment: 32,
            data: (0..112u32).map(|i| (i * 37 % 256) as u8).collect(),
        }
    }

    /// The bytes and the offset where each section or field ends.
    fn build(&self) -> (Vec<u8>, Vec<usize>) {
        let mut b = Vec::new();
        let mut marks = Vec::new();
        b.extend_from_slice(&self.magic);
        marks.push(b.len());
        b.extend_from_slice(&self.version.to_le_bytes());
        marks.push(b.len());
        b.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        marks.push(b.len());
        b.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        marks.push(b.len());
        for k in &self.kvs {
            b.extend_from_slice(k);
            marks.push(b.len());
        }
        for t in &self.tensors {
            b.extend(string(&t.name));
            marks.push(b.len());
            b.extend_from_slice(&t.n_dims.to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            marks.push(b.len());
            b.extend_from_slice(&t.ty.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
            marks.push(b.len());
        }
        while b.len() % self.alignment != 0 {
            b.push(0);
        }
        marks.push(b.len());
        b.extend_from_slice(&self.data);
        marks.push(b.len());
        (b, marks)
    }

    fn bytes(&self) -> Vec<u8> {
        self.build().0
    }
}

fn parse(bytes: &[u8]) -> Result<Gguf, Error> {
    Gguf::parse(bytes)
}

macro_rules! rejects {
    ($raw:expr, $pat:pat) => {{
        let bytes = $raw.bytes();
        let r = parse(&bytes);
        assert!(matches!(r, Err($pat)), "expected {}, got {:?}", stringify!($pat), r.map(|_| ()));
        bytes
    }};
}

#[test]
fn the_valid_file_parses() {
    let g = parse(&Raw::valid().bytes()).unwrap();
    assert_eq!(g.tensors.len(), 3);
    assert_eq!(g.metadata.len(), 4);
    assert_eq!(g.tensor("a").unwrap().size, 36);
}

#[test]
fn truncation_at_every_boundary_and_between() {
    let (bytes, marks) = Raw::valid().build();
    let data_start = marks[marks.len() - 2];
    let mut cuts = Vec::new();
    let mut prev = 0;
    for &m in &marks {
        cuts.extend([prev, (prev + m) / 2, m.saturating_sub(1)]);
        prev = m;
    }
    for cut in cuts.into_iter().filter(|&c| c < bytes.len()) {
        let r = parse(&bytes[..cut]);
        match r {
            // A count that the remaining bytes cannot hold is caught before the read.
            Err(Error::Truncated { .. } | Error::TooLarge { .. }) if cut < data_start => {}
            // Cut in the padding or data: the header is whole, the tensors are not.
            Err(Error::TensorOutOfFile { .. }) if cut >= marks[marks.len() - 3] => {}
            other => panic!("cut at {cut}: unexpected {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn bad_header_fields() {
    let mut r = Raw::valid();
    r.magic = *b"GGML";
    rejects!(r, Error::BadMagic { .. });
    for v in [0, 1, 4, 0x0300_0000, u32::MAX] {
        let mut r = Raw::valid();
        r.version = v;
        rejects!(r, Error::UnsupportedVersion { .. });
    }
    for n in [1000, 1 << 40, u64::MAX] {
        let mut r = Raw::valid();
        r.tensor_count = Some(n);
        let b = r.bytes();
        assert!(
            matches!(parse(&b), Err(Error::TooLarge { .. }) | Err(Error::Truncated { .. })),
            "tensor count {n}"
        );
        let mut r = Raw::valid();
        r.kv_count = Some(n);
        let b = r.bytes();
        assert!(parse(&b).is_err(), "kv count {n}");
    }
    let mut r = Raw::valid();
    r.tensor_count = Some(u64::MAX);
    rejects!(r, Error::TooLarge { .. });
    let mut r = Raw::valid();
    r.kv_count = Some(u64::MAX);
    rejects!(r, Error::TooLarge { .. });
}

#[test]
fn bad_metadata() {
    // Key length beyond the file.
    let mut r = Raw::valid();
    r.kvs[0] = [u64::MAX.to_le_bytes().to_vec(), b"x".to_vec()].concat();
    rejects!(r, Error::TooLarge { .. });
    // String value length beyond the file.
    let mut r = Raw::valid();
    r.kvs[0] = kv("general.architecture", 8, &(1u64 << 50).to_le_bytes());
    rejects!(r, Error::TooLarge { .. });
    // Array count beyond the file.
    let mut r = Raw::valid();
    let arr = [4u32.to_le_bytes().to_vec(), (1u64 << 60).to_le_bytes().to_vec()].concat();
    r.kvs[2] = kv("x.strings", 9, &arr);
    rejects!(r, Error::TooLarge { .. });
    // Unknown value types, scalar and array element.
    for t in [13, 255, u32::MAX] {
        let mut r = Raw::valid();
        r.kvs[1] = kv("llama.block_count", t, &2u32.to_le_bytes());
        rejects!(r, Error::UnknownValueType { .. });
        let mut r = Raw::valid();
        let arr = [t.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec(), vec![0; 8]].concat();
        r.kvs[2] = kv("x.strings", 9, &arr);
        rejects!(r, Error::UnknownValueType { .. });
    }
    // Invalid UTF-8 in a key and in a value.
    let mut r = Raw::valid();
    r.kvs[1] = [string(&[0xff, 0xfe]), 4u32.to_le_bytes().to_vec(), 2u32.to_le_bytes().to_vec()].concat();
    rejects!(r, Error::InvalidUtf8 { .. });
    let mut r = Raw::valid();
    r.kvs[0] = kv("general.architecture", 8, &string(&[0xc3]));
    rejects!(r, Error::InvalidUtf8 { .. });
    // Duplicate key.
    let mut r = Raw::valid();
    r.kvs.push(kv("llama.block_count", 4, &3u32.to_le_bytes()));
    rejects!(r, Error::DuplicateKey { .. });
    // Bool other than 0/1.
    let mut r = Raw::valid();
    r.kvs.push(kv("x.bool", 7, &[2]));
    rejects!(r, Error::TooLarge { .. });
    // Arrays nested deeper than the cap.
    let mut nested = [0u32.to_le_bytes().to_vec(), 0u64.to_le_bytes().to_vec()].concat();
    for _ in 0..20 {
        nested = [9u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec(), nested].concat();
    }
    let mut r = Raw::valid();
    r.kvs.push(kv("x.deep", 9, &nested));
    rejects!(r, Error::NestingTooDeep { .. });
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, u32::MAX] {
        let mut r = Raw::valid();
        r.kvs.push(kv("general.alignment", 4, &a.to_le_bytes()));
        rejects!(r, Error::BadAlignment { .. });
    }
    let mut r = Raw::valid();
    r.kvs.push(kv("general.alignment", 8, &string(b"32")));
    rejects!(r, Error::BadAlignmentType { .. });
}

#[test]
fn bad_tensor_infos() {
    let edit = |f: &dyn Fn(&mut Raw)| {
        let mut r = Raw::valid();
        f(&mut r);
        r
    };
    for n in [0u32, 5, u32::MAX] {
        rejects!(
            edit(&|r| {
                r.tensors[1].n_dims = n;
                r.tensors[1].dims = vec![8; n.min(5) as usize]
            }),
            Error::BadDimCount { .. }
        );
    }
    // A huge n_dims with no dims after it is still caught as a bad count, not a read.
    rejects!(edit(&|r| r.tensors[2].dims[1] = 0), Error::ZeroDim { .. });
    rejects!(
        edit(&|r| {
            r.tensors[1].n_dims = 3;
            r.tensors[1].dims = vec![1 << 32, 1 << 32, 1 << 32]
        }),
        Error::ElementOverflow { .. }
    );
    rejects!(
        edit(&|r| {
            r.tensors[1].n_dims = 2;
            r.tensors[1].dims = vec![1 << 62, 4]
        }),
        Error::ElementOverflow { .. }
    );
    for ty in [4u32, 5, 31, 36, 43, 9999, u32::MAX] {
        rejects!(edit(&|r| r.tensors[0].ty = ty), Error::UnknownTensorType { .. });
    }
    rejects!(edit(&|r| r.tensors[0].dims = vec![33, 2]), Error::RowNotBlockMultiple { .. });
    rejects!(edit(&|r| r.tensors[1].offset = 65), Error::MisalignedTensor { .. });
    rejects!(edit(&|r| r.tensors[1].offset = 1 << 40), Error::TensorOutOfFile { .. });
    rejects!(edit(&|r| r.tensors[1].offset = u64::MAX - 31), Error::TensorOffsetOverflow { .. });
    rejects!(edit(&|r| r.tensors[1].dims = vec![1 << 40]), Error::TensorOutOfFile { .. });
    rejects!(edit(&|r| r.tensors[1].offset = 32), Error::TensorOverlap { .. });
    rejects!(edit(&|r| r.tensors[2].offset = 0), Error::TensorOverlap { .. });
    rejects!(edit(&|r| r.tensors[2].name = b"a".to_vec()), Error::DuplicateTensor { .. });
    rejects!(edit(&|r| r.tensors[0].name = vec![0xff]), Error::InvalidUtf8 { .. });
    rejects!(edit(&|r| r.tensors[0].name = vec![b'n'; 70_000]), Error::TooLarge { .. });
}

/// Random byte flips and random garbage with fixed seeds: any result but a panic.
#[test]
fn random_byte_flips_never_panic() {
    let base = Raw::valid().bytes();
    let mut rng = common::Rng::new(42);
    let mut rejected = 0;
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] ^= 1 << rng.below(8);
        }
        if parse(&b).is_err() {
            rejected += 1;
        }
    }
    assert!(rejected > 1000, "flips in the header must be caught ({rejected})");
    for len in 0..200 {
        let b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
        with_magic.extend_from_slice(&b);
        assert!(parse(&b).is_err());
        let _ = parse(&with_magic);
    }
}

/// The CLI turns each bad file into exit code 1 and one `error:` line, nothing on stdout.
#[test]
fn inspect_reports_bad_files_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let (bytes, marks) = Raw::valid().build();
    cases.extend(marks.iter().map(|&m| bytes[..m / 2].to_vec()));
    let mut r = Raw::valid();
    r.tensors[1].offset = 1 << 40;
    cases.push(r.bytes());
    let mut r = Raw::valid();
    r.tensors[0].ty = 31;
    cases.push(r.bytes());
    let mut r = Raw::valid();
    r.kv_count = Some(u64::MAX);
    cases.push(r.bytes());
    cases.push(Vec::new());
    for (i, b) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.gguf"));
        std::fs::write(&p, b).unwrap();
        let out = common::ferrite().arg("inspect").arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: ") && err.lines().count() == 1, "case {i}: {err:?}");
        assert!(out.stdout.is_empty());
    }
    let out = common::ferrite().arg("inspect").arg(dir.path().join("missing.gguf")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = common::ferrite().arg("inspect").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = common::ferrite().arg("inspect").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a directory");
}
