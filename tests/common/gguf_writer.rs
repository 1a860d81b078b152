//! A minimal GGUF v3 writer, written from the format description, to build test files.

use std::path::Path;

/// A metadata value to write.
pub enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A tensor to write: name, ggml dims (innermost first), ggml type id, raw bytes.
pub struct RawTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub bytes: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Serialise a GGUF v3 file to bytes (alignment 32).
pub fn gguf_bytes(meta: &[(&str, Meta)], tensors: &[RawTensor]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        put_str(&mut out, key);
        match value {
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(*v as u8);
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Meta::Strs(list) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((list.len() as u64).to_le_bytes());
                for s in list {
                    put_str(&mut out, s);
                }
            }
            Meta::I32s(list) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((list.len() as u64).to_le_bytes());
                for v in list {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.type_id.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset += (t.bytes.len() as u64).div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    let data_start = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off as usize, 0);
        out.extend(&t.bytes);
    }
    out
}

/// Write a GGUF v3 file.
pub fn write_gguf(path: &Path, meta: &[(&str, Meta)], tensors: &[RawTensor]) {
    std::fs::write(path, gguf_bytes(meta, tensors)).unwrap();
}

/// f32 values as a ggml F32 tensor with PyTorch-order `shape`.
pub fn f32_tensor(name: &str, shape: &[usize], data: &[f32]) -> RawTensor {
    RawTensor {
        name: name.into(),
        ne: shape.iter().rev().map(|&d| d as u64).collect(),
        type_id: 0,
        bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// GPT-2's byte → printable character map: the 256 base tokens of a byte-level BPE vocab.
pub fn byte_level_alphabet() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap().to_string()
            } else {
                let c = char::from_u32(next).unwrap().to_string();
                next += 1;
                c
            }
        })
        .collect()
}
