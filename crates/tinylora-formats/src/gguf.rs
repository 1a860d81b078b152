//! GGUF v2/v3 reader: header, metadata, tensor index, and tensor data as f32.
//!
//! Layout: `"GGUF" | version: u32 | n_tensors: u64 | n_kv: u64 | kv* | tensor_info* | pad |
//! data`. Tensor dims are stored innermost first (ggml `ne`); [`GgufTensorInfo::shape`] gives
//! them outermost first, as PyTorch does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bytes::FileBytes;
use crate::error::{FormatError, Result};
use crate::quant::{GgmlType, dequantize};

/// One GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
    /// A short description for `tinylora info` (arrays are summarised).
    pub fn summary(&self) -> String {
        match self {
            GgufValue::U64(v) => v.to_string(),
            GgufValue::I64(v) => v.to_string(),
            GgufValue::F64(v) => v.to_string(),
            GgufValue::Bool(v) => v.to_string(),
            GgufValue::Str(s) if s.len() > 60 => {
                format!("{:?}… ({} chars)", &s[..s.floor_char_boundary(60)], s.len())
            }
            GgufValue::Str(s) => format!("{s:?}"),
            GgufValue::Array(a) => format!("[{} values]", a.len()),
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// llama.cpp tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dims, innermost first.
    pub ne: Vec<usize>,
    /// Element type.
    pub dtype: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Byte length of the data.
    pub len: usize,
}

impl GgufTensorInfo {
    /// Dims outermost first (PyTorch order): a `[d_out, d_in]` weight has `ne = [d_in, d_out]`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().copied().collect()
    }
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.ne.iter().product()
    }
}

/// An opened, memory-mapped GGUF file whose header and index have been validated.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    bytes: FileBytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata, by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor index in file order.
    pub tensors: Vec<GgufTensorInfo>,
}

/// Arrays nested deeper than this are refused (real files nest at most one level).
const MAX_ARRAY_DEPTH: usize = 8;

/// The fewest bytes a metadata value of type `ty` takes in the file (1 for unknown types,
/// which are refused when read).
fn min_value_size(ty: u32) -> usize {
    match ty {
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

/// A bounds-checked little-endian cursor that reports truncation with the file name.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FormatError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(n as u64),
                len: self.bytes.len() as u64,
            }),
        }
    }
    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let n = self.u64(what)?;
        let n = self.len_guard(n, 1, what)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| FormatError::invalid(self.path, format!("{} is not valid UTF-8", what())))
    }
    /// Rejects counts of items of at least `min_item` bytes that cannot fit in the rest of the
    /// file, so that no allocation is sized beyond what the file holds.
    fn len_guard(&self, n: u64, min_item: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let left = (self.bytes.len() - self.pos) as u64;
        let need = n.saturating_mul(min_item as u64);
        if need > left {
            return Err(FormatError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{} ({n} items)", what()),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(need),
                len: self.bytes.len() as u64,
            });
        }
        Ok(n as usize)
    }
    /// A metadata value of type `ty`; `depth` counts the arrays it is nested in.
    fn value(&mut self, ty: u32, depth: usize, what: &dyn Fn() -> String) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U64(self.u8(what)? as u64),
            1 => GgufValue::I64(self.u8(what)? as i8 as i64),
            2 => GgufValue::U64(self.u16(what)? as u64),
            3 => GgufValue::I64(self.u16(what)? as i16 as i64),
            4 => GgufValue::U64(self.u32(what)? as u64),
            5 => GgufValue::I64(self.u32(what)? as i32 as i64),
            6 => GgufValue::F64(f32::from_bits(self.u32(what)?) as f64),
            7 => GgufValue::Bool(self.u8(what)? != 0),
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(FormatError::invalid(
                        self.path,
                        format!("{} nests arrays more than {MAX_ARRAY_DEPTH} deep", what()),
                    ));
                }
                let item_ty = self.u32(what)?;
                let n = self.u64(what)?;
                let n = self.len_guard(n, min_value_size(item_ty), what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1, what)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(what)?)),
            other => {
                return Err(FormatError::invalid(
                    self.path,
                    format!("{} has unknown metadata value type {other}", what()),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Open and validate a GGUF file: header, metadata, tensor index, and that every tensor's
    /// data lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::parse(path, FileBytes::map(path)?)
    }

    /// Parse and validate GGUF `bytes`; `path` names them in errors.
    pub fn parse(path: &Path, bytes: FileBytes) -> Result<Self> {
        let mut r = Reader {
            path,
            bytes: &bytes,
            pos: 0,
        };
        let magic = r.take(4, &|| "the GGUF magic".into())?;
        if magic != b"GGUF" {
            return Err(FormatError::BadMagic {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let version = r.u32(&|| "the GGUF version".into())?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let n_tensors = r.u64(&|| "the tensor count".into())?;
        let n_kv = r.u64(&|| "the metadata count".into())?;
        let n_kv = r.len_guard(n_kv, 13, &|| "metadata".into())?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&|| format!("metadata key #{i}"))?;
            let ty = r.u32(&|| format!("the type of metadata `{key}`"))?;
            let value = r.value(ty, 0, &|| format!("metadata `{key}`"))?;
            metadata.insert(key, value);
        }
        let n_tensors = r.len_guard(n_tensors, 24, &|| "the tensor index".into())?;
        let mut raw = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&|| format!("the name of tensor #{i}"))?;
            let what = || format!("the index entry of tensor `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims > 4 {
                return Err(FormatError::invalid(
                    path,
                    format!("tensor `{name}` has {n_dims} dims (ggml allows at most 4)"),
                ));
            }
            let ne = (0..n_dims)
                .map(|_| r.u64(&what).map(|d| d as usize))
                .collect::<Result<Vec<_>>>()?;
            let type_id = r.u32(&what)?;
            let rel_offset = r.u64(&what)?;
            raw.push((name, ne, type_id, rel_offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(FormatError::invalid(
                path,
                format!("general.alignment = {alignment} is not a power of two"),
            ));
        }
        // u64 arithmetic throughout: every offset and size comes from the file
        let file_len = bytes.len() as u64;
        let data_start = (r.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| {
                FormatError::invalid(path, format!("general.alignment = {alignment} is too large"))
            })?;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, ne, type_id, rel_offset) in raw {
            let dtype = GgmlType::from_id(type_id).ok_or_else(|| FormatError::UnknownType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                type_id,
            })?;
            let numel = ne
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| FormatError::invalid(path, format!("tensor `{name}` dims {ne:?} overflow")))?;
            if numel % dtype.block_size() != 0 {
                return Err(FormatError::invalid(
                    path,
                    format!(
                        "tensor `{name}` has {numel} values, not a multiple of the {} block size {}",
                        dtype.name(),
                        dtype.block_size()
                    ),
                ));
            }
            let len = dtype
                .bytes_for(numel)
                .ok_or_else(|| FormatError::invalid(path, format!("tensor `{name}` dims {ne:?} overflow")))?;
            let end = data_start
                .checked_add(rel_offset)
                .and_then(|o| o.checked_add(len as u64));
            if end.is_none_or(|e| e > file_len) {
                return Err(FormatError::Truncated {
                    path: path.to_path_buf(),
                    what: format!("the data of tensor `{name}` (offset {rel_offset} in the data section)"),
                    start: data_start.saturating_add(rel_offset),
                    end: end.unwrap_or(u64::MAX),
                    len: file_len,
                });
            }
            // checked above: the data ends inside the file, so its offset fits in usize
            let offset = (data_start + rel_offset) as usize;
            tensors.push(GgufTensorInfo {
                name,
                ne,
                dtype,
                offset,
                len,
            });
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A required unsigned metadata value, with a clear error when absent or not one.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.optional_u64(key)?
            .ok_or_else(|| FormatError::missing(&self.path, format!("metadata `{key}` (integer)")))
    }

    /// An optional unsigned metadata value: `None` when absent, an error when present but not a
    /// non-negative integer.
    pub fn optional_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    FormatError::invalid(
                        &self.path,
                        format!("metadata `{key}` = {} is not a non-negative integer", v.summary()),
                    )
                })
            })
            .transpose()
    }

    /// A required string metadata value.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(GgufValue::as_str)
            .ok_or_else(|| FormatError::missing(&self.path, format!("metadata `{key}` (string)")))
    }

    /// The index entry of a tensor by llama.cpp name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.bytes[info.offset..info.offset + info.len]
    }

    /// A tensor dequantized to f32, row-major in [`GgufTensorInfo::shape`] order.
    pub fn tensor_f32(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        dequantize(info.dtype, self.tensor_bytes(info)).ok_or_else(|| FormatError::UnsupportedType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            dtype: info.dtype.name(),
        })
    }
}
