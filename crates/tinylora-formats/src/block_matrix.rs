//! A weight matrix kept as the file stores it: rows of ggml blocks (or F32/F16/BF16 values),
//! decoded on use. A Q4_1 matrix takes 5 bits a value instead of f32's 32.

use std::ops::Range;

use crate::quant::{GgmlType, dequantize_into, quantize};

/// Why bytes or values do not make a [`BlockMatrix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The type has no decoder.
    #[error("{} cannot be decoded", ty.name())]
    Undecodable {
        /// The type.
        ty: GgmlType,
    },
    /// A row is not a whole number of blocks.
    #[error("rows of {cols} values are not whole {} blocks of {}", ty.name(), ty.block_size())]
    PartialBlocks {
        /// The type.
        ty: GgmlType,
        /// Values a row.
        cols: usize,
    },
    /// The bytes are not exactly `rows` rows of blocks.
    #[error("{found} bytes for a {rows} × {cols} {} matrix (expected {expected:?})", ty.name())]
    ByteCount {
        /// The type.
        ty: GgmlType,
        /// Rows.
        rows: usize,
        /// Values a row.
        cols: usize,
        /// Bytes given.
        found: usize,
        /// Bytes the shape needs (`None`: more than usize holds).
        expected: Option<usize>,
    },
    /// Values to quantize that are not `rows × cols`.
    #[error("{found} values for a {rows} × {cols} matrix")]
    ValueCount {
        /// Rows.
        rows: usize,
        /// Values a row.
        cols: usize,
        /// Values given.
        found: usize,
    },
    /// No converter writes this type.
    #[error("no converter to {}", ty.name())]
    NoConverter {
        /// The type.
        ty: GgmlType,
    },
}

/// W `[rows, cols]` in ggml type `ty`, row-major: each row is `cols / block_size` blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMatrix {
    /// Storage type (any type [`GgmlType::can_dequantize`] accepts).
    pub ty: GgmlType,
    /// Rows (d_out of a projection).
    pub rows: usize,
    /// Values per row (d_in), a multiple of the type's block size.
    pub cols: usize,
    /// `rows · row_bytes()` bytes.
    pub bytes: Vec<u8>,
}

impl BlockMatrix {
    /// Wrap stored bytes, checking that they are exactly `rows` rows of whole blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, BlockError> {
        if !ty.can_dequantize() {
            return Err(BlockError::Undecodable { ty });
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(BlockError::PartialBlocks { ty, cols });
        }
        let expected = ty.bytes_for(cols).and_then(|r| r.checked_mul(rows));
        if expected != Some(bytes.len()) {
            return Err(BlockError::ByteCount {
                ty,
                rows,
                cols,
                found: bytes.len(),
                expected,
            });
        }
        Ok(BlockMatrix {
            ty,
            rows,
            cols,
            bytes,
        })
    }

    /// Quantize f32 values `[rows, cols]` to `ty` (see [`quantize`] for the types).
    pub fn quantize(ty: GgmlType, values: &[f32], rows: usize, cols: usize) -> Result<Self, BlockError> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(BlockError::ValueCount {
                rows,
                cols,
                found: values.len(),
            });
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(BlockError::PartialBlocks { ty, cols });
        }
        let bytes = quantize(ty, values).ok_or(BlockError::NoConverter { ty })?;
        Self::new(ty, rows, cols, bytes)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// Rows `rows` as f32 into `out` (`rows.len() · cols` values).
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let rb = self.row_bytes();
        dequantize_into(self.ty, &self.bytes[rows.start * rb..rows.end * rb], out);
    }

    /// Every value as f32, `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_rows(0..self.rows, &mut out);
        out
    }

    /// The same matrix in type `ty`: these bytes when it already is, else decoded and
    /// quantized again (exact for F32; rounding for the others).
    pub fn convert(self, ty: GgmlType) -> Result<Self, BlockError> {
        if ty == self.ty {
            return Ok(self);
        }
        let values = self.dequantize();
        Self::quantize(ty, &values, self.rows, self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_as_the_whole() {
        let x: Vec<f32> = (0..4 * 64).map(|i| (i as f32 * 0.37).cos()).collect();
        let m = BlockMatrix::quantize(GgmlType::Q8_0, &x, 4, 64).unwrap();
        assert_eq!(m.row_bytes(), 2 * 34);
        let all = m.dequantize();
        let mut two = vec![0.0; 2 * 64];
        m.dequantize_rows(1..3, &mut two);
        assert_eq!(two, all[64..192]);
        let f32m = m.clone().convert(GgmlType::F32).unwrap();
        assert_eq!(f32m.dequantize(), all);
    }

    #[test]
    fn inconsistent_sizes_are_refused() {
        assert!(BlockMatrix::new(GgmlType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(BlockMatrix::new(GgmlType::Q4_1, 2, 48, vec![0; 60]).is_err());
        assert!(BlockMatrix::new(GgmlType::Q2_K, 1, 256, vec![0; 84]).is_err());
        assert!(BlockMatrix::new(GgmlType::Q4_1, 2, 32, vec![0; 40]).is_ok());
    }
}
