//! ggml tensor types and their dequantization to f32.
//!
//! Block layouts follow ggml (`ggml-common.h`): every quantized type stores fixed-size blocks
//! of `block_size()` values in `type_size()` bytes, little-endian, f16 scales.

use half::{bf16, f16};

/// QK_K: values per K-quant super-block.
const QK_K: usize = 256;

/// A ggml tensor element type (the subset with a stable, documented layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}

impl GgmlType {
    /// Every type with its ggml type number (`ggml.h`), the ids GGUF files and the WGSL
    /// decoder (`shaders/block_value.wgsl`) use.
    const IDS: [(GgmlType, u32); 15] = {
        use GgmlType::*;
        [
            (F32, 0),
            (F16, 1),
            (Q4_0, 2),
            (Q4_1, 3),
            (Q5_0, 6),
            (Q5_1, 7),
            (Q8_0, 8),
            (Q8_1, 9),
            (Q2_K, 10),
            (Q3_K, 11),
            (Q4_K, 12),
            (Q5_K, 13),
            (Q6_K, 14),
            (Q8_K, 15),
            (BF16, 30),
        ]
    };

    /// The type for a ggml type number, `None` when unknown.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::IDS.iter().find(|(_, i)| *i == id).map(|(t, _)| *t)
    }

    /// The type named `name` as [`Self::name`] writes it (`Q4_K`, `BF16`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::IDS.iter().map(|(t, _)| *t).find(|t| t.name() == name)
    }

    /// The ggml type number.
    pub fn id(self) -> u32 {
        Self::IDS
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, i)| *i)
            .expect("every type has an id")
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 2 + 16,
            Q4_1 => 2 + 2 + 16,
            Q5_0 => 2 + 4 + 16,
            Q5_1 => 2 + 2 + 4 + 16,
            Q8_0 => 2 + 32,
            Q8_1 => 2 + 2 + 32,
            Q2_K => QK_K / 16 + QK_K / 4 + 2 + 2,
            Q3_K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Q4_K => 2 + 2 + 12 + QK_K / 2,
            Q5_K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            Q8_K => 4 + QK_K + QK_K / 16 * 2,
        }
    }

    /// Bytes taken by `n` values (n must be a multiple of the block size); `None` on overflow.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        !matches!(
            self,
            GgmlType::Q8_1 | GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q8_K
        )
    }

    /// ggml's name for the type (`Q4_K`, `F16`, ...).
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantize `bytes` of type `ty` to f32. `bytes.len()` must be a whole number of blocks.
///
/// Returns `None` for types that [`GgmlType::can_dequantize`] rejects.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    if !ty.can_dequantize() {
        return None;
    }
    let mut out = vec![0.0; bytes.len() / ty.type_size() * ty.block_size()];
    dequantize_into(ty, bytes, &mut out);
    Some(out)
}

/// Dequantize `bytes` (whole blocks of `ty`) into `out`, `block_size()` values per block.
///
/// # Panics
/// When `ty` cannot be dequantized or `out` does not hold exactly the blocks' values.
#[inline(always)]
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    assert!(ty.can_dequantize(), "{ty:?} cannot be dequantized");
    let (bs, ts) = (ty.block_size(), ty.type_size());
    assert_eq!(
        bytes.len() / ts * bs,
        out.len(),
        "{ty:?}: {} bytes into {} values",
        bytes.len(),
        out.len()
    );
    let blocks = bytes.chunks_exact(ts).zip(out.chunks_exact_mut(bs));
    // one loop per type, so that each block decoder inlines into it (and into callers
    // compiled for wider vector units)
    match ty {
        GgmlType::F32 => {
            for (b, y) in blocks {
                y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, y) in blocks {
                y[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, y) in blocks {
                y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        GgmlType::Q4_0 => each(blocks, q4_0),
        GgmlType::Q4_1 => each(blocks, q4_1),
        GgmlType::Q5_0 => each(blocks, q5_0),
        GgmlType::Q5_1 => each(blocks, q5_1),
        GgmlType::Q8_0 => each(blocks, q8_0),
        GgmlType::Q4_K => each(blocks, q4_k),
        GgmlType::Q5_K => each(blocks, q5_k),
        GgmlType::Q6_K => each(blocks, q6_k),
        _ => unreachable!("checked by can_dequantize"),
    }
}

/// `decode` on every (block, values) pair, as a plain loop (it inlines where `for_each`'s
/// closure may not).
#[inline(always)]
fn each<'a>(blocks: impl Iterator<Item = (&'a [u8], &'a mut [f32])>, decode: fn(&[u8], &mut [f32])) {
    for (b, y) in blocks {
        decode(b, y);
    }
}

/// Quantize `values` (a whole number of blocks) to `ty`, for the types weights are converted
/// to: F32, F16, BF16, Q8_0 and Q4_1, by ggml's reference rounding (`ggml-quants.c`).
/// `None` for other types.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    let blocks = values.chunks_exact(ty.block_size());
    let mut out = Vec::with_capacity(blocks.len() * ty.type_size());
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|&v| out.extend(f16::from_f32(v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|&v| out.extend(bf16::from_f32(v).to_le_bytes())),
        GgmlType::Q8_0 => blocks.for_each(|x| {
            // d = max|x| / 127, q = round(x / d)
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
        }),
        GgmlType::Q4_1 => blocks.for_each(|x| {
            // d = (max − min) / 15, q = round((x − min) / d) in 0..=15
            let (min, max) = x
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            let q = |v: f32| (((v - min) * id + 0.5) as u8).min(15);
            out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
        }),
        _ => return None,
    }
    Some(out)
}

/// Q4_0: `d: f16, qs: [u8; 16]`; x[j] = d (lo4(qs[j]) - 8), x[j+16] = d (hi4(qs[j]) - 8).
#[inline(always)]
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * ((q & 0xF) as f32 - 8.0);
        y[j + 16] = d * ((q >> 4) as f32 - 8.0);
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; x = d q + m.
#[inline(always)]
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = d * (q & 0xF) as f32 + m;
        y[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// The 5-bit codes of a Q5 block: low nibbles from `qs`, fifth bits from the 32-bit `qh`.
#[inline(always)]
fn q5_codes(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut codes = [0u8; 32];
    for j in 0..16 {
        let hi0 = ((qh >> j) & 1) as u8;
        let hi1 = ((qh >> (j + 16)) & 1) as u8;
        codes[j] = (qs[j] & 0xF) | (hi0 << 4);
        codes[j + 16] = (qs[j] >> 4) | (hi1 << 4);
    }
    codes
}

/// Q5_0: `d: f16, qh: u32, qs: [u8; 16]`; x = d (q5 - 16).
#[inline(always)]
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&q5_codes(&b[2..6], &b[6..22])) {
        *y = d * (q as f32 - 16.0);
    }
}

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; x = d q5 + m.
#[inline(always)]
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (y, &q) in y.iter_mut().zip(&q5_codes(&b[4..8], &b[8..24])) {
        *y = d * q as f32 + m;
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`; x = d q.
#[inline(always)]
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = d * (q as i8) as f32;
    }
}

/// The 6-bit (scale, min) pair of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K.
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        let sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// Q4_K: `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`, 8 sub-blocks of 32;
/// x = d·sc_s·q − dmin·m_s. Each 32 bytes of `qs` hold two sub-blocks (low, then high nibbles).
#[inline(always)]
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for (pair, (q, y)) in b[16..144]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * pair, scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        for (l, &v) in q.iter().enumerate() {
            y[l] = d1 * (v & 0xF) as f32 - m1;
            y[l + 32] = d2 * (v >> 4) as f32 - m2;
        }
    }
}

/// Q5_K: `d, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K with a fifth
/// bit per value: sub-block s takes bit s of `qh[l]`.
#[inline(always)]
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (pair, (q, y)) in b[48..176]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        for (half, shift) in [(0usize, 0u32), (1, 4)] {
            let s = 2 * pair + half;
            let (sc, m) = scale_min_k4(s, scales);
            let (d1, m1) = (d * sc, dmin * m);
            for (l, (&v, &h)) in q.iter().zip(qh).enumerate() {
                let code = ((v >> shift) & 0xF) | (((h >> s) & 1) << 4);
                y[32 * half + l] = d1 * code as f32 - m1;
            }
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`, 16 sub-blocks of 16;
/// x = d·sc·(q6 − 32).
#[inline(always)]
fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh, sc, y) = (
            &ql[64 * half..],
            &qh[32 * half..],
            &sc[8 * half..],
            &mut y[128 * half..],
        );
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each test packs hand-chosen codes and scales into a block by the ggml layout and
    //! checks every value against the type's defining formula.
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn check(ty: GgmlType, block: &[u8], expected: &[f32]) {
        assert_eq!(block.len(), ty.type_size(), "{ty:?} block size");
        let got = dequantize(ty, block).unwrap();
        assert_eq!(got.len(), ty.block_size());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{ty:?}[{i}]: got {g}, expected {e}"
            );
        }
    }

    fn pack_nibbles(q: &[u8]) -> Vec<u8> {
        (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect()
    }

    fn pack_qh(q: &[u8]) -> [u8; 4] {
        let bits = (0..32).fold(0u32, |acc, i| acc | (((q[i] >> 4) as u32 & 1) << i));
        bits.to_le_bytes()
    }

    #[test]
    fn q4_0_block() {
        let q: Vec<u8> = (0..32).map(|i| (i * 5 % 16) as u8).collect();
        let mut b = h(0.5).to_vec();
        b.extend(pack_nibbles(&q));
        let e: Vec<f32> = q.iter().map(|&q| 0.5 * (q as f32 - 8.0)).collect();
        check(GgmlType::Q4_0, &b, &e);
    }

    #[test]
    fn q4_1_block() {
        let q: Vec<u8> = (0..32).map(|i| (i * 3 % 16) as u8).collect();
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.5));
        b.extend(pack_nibbles(&q));
        let e: Vec<f32> = q.iter().map(|&q| 0.25 * q as f32 - 1.5).collect();
        check(GgmlType::Q4_1, &b, &e);
    }

    #[test]
    fn q5_0_block() {
        let q: Vec<u8> = (0..32).map(|i| (i * 7 % 32) as u8).collect();
        let mut b = h(0.125).to_vec();
        b.extend(pack_qh(&q));
        b.extend(pack_nibbles(&q.iter().map(|v| v & 0xF).collect::<Vec<_>>()));
        let e: Vec<f32> = q.iter().map(|&q| 0.125 * (q as f32 - 16.0)).collect();
        check(GgmlType::Q5_0, &b, &e);
    }

    #[test]
    fn q5_1_block() {
        let q: Vec<u8> = (0..32).map(|i| (31 - i * 11 % 32) as u8).collect();
        let mut b = h(0.5).to_vec();
        b.extend(h(2.0));
        b.extend(pack_qh(&q));
        b.extend(pack_nibbles(&q.iter().map(|v| v & 0xF).collect::<Vec<_>>()));
        let e: Vec<f32> = q.iter().map(|&q| 0.5 * q as f32 + 2.0).collect();
        check(GgmlType::Q5_1, &b, &e);
    }

    #[test]
    fn q8_0_block() {
        let q: Vec<i8> = (0..32).map(|i| (i * 9 - 128) as i8).collect();
        let mut b = h(0.0625).to_vec();
        b.extend(q.iter().map(|&v| v as u8));
        let e: Vec<f32> = q.iter().map(|&q| 0.0625 * q as f32).collect();
        check(GgmlType::Q8_0, &b, &e);
    }

    #[test]
    fn f16_bf16_f32() {
        let vals = [1.5f32, -2.25, 0.0, 65504.0];
        let f16b: Vec<u8> = vals.iter().flat_map(|&v| h(v)).collect();
        assert_eq!(dequantize(GgmlType::F16, &f16b).unwrap(), vals);
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(
            dequantize(GgmlType::BF16, &bf).unwrap(),
            [1.5, -2.25, 0.0, 65536.0]
        );
        let f: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &f).unwrap(), vals);
    }

    /// The 12-byte packing of eight 6-bit scales and mins used by Q4_K and Q5_K.
    fn pack_scales_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        s
    }

    const SC: [u8; 8] = [1, 63, 17, 40, 33, 5, 62, 48];
    const MN: [u8; 8] = [0, 12, 63, 31, 50, 7, 19, 36];

    #[test]
    fn q4_k_block() {
        let q: Vec<u8> = (0..256).map(|i| (i * 7 % 16) as u8).collect();
        let mut b = h(0.5).to_vec();
        b.extend(h(0.25));
        b.extend(pack_scales_k4(&SC, &MN));
        for p in 0..4 {
            b.extend((0..32).map(|l| q[64 * p + l] | (q[64 * p + 32 + l] << 4)));
        }
        let e: Vec<f32> = (0..256)
            .map(|i| 0.5 * SC[i / 32] as f32 * q[i] as f32 - 0.25 * MN[i / 32] as f32)
            .collect();
        check(GgmlType::Q4_K, &b, &e);
    }

    #[test]
    fn q5_k_block() {
        let q: Vec<u8> = (0..256).map(|i| (i * 13 % 32) as u8).collect();
        let mut b = h(0.125).to_vec();
        b.extend(h(0.5));
        b.extend(pack_scales_k4(&SC, &MN));
        b.extend((0..32).map(|l| (0..8).fold(0u8, |acc, s| acc | (((q[32 * s + l] >> 4) & 1) << s))));
        for p in 0..4 {
            b.extend((0..32).map(|l| (q[64 * p + l] & 0xF) | ((q[64 * p + 32 + l] & 0xF) << 4)));
        }
        let e: Vec<f32> = (0..256)
            .map(|i| 0.125 * SC[i / 32] as f32 * q[i] as f32 - 0.5 * MN[i / 32] as f32)
            .collect();
        check(GgmlType::Q5_K, &b, &e);
    }

    #[test]
    fn q6_k_block() {
        let q: Vec<u8> = (0..256).map(|i| (i * 29 % 64) as u8).collect();
        let sc: Vec<i8> = (0..16).map(|i| (i * 17 - 128) as i8).collect();
        let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
        for half in 0..2 {
            for l in 0..32 {
                let e = |k: usize| q[128 * half + l + 32 * k];
                ql[64 * half + l] = (e(0) & 0xF) | ((e(2) & 0xF) << 4);
                ql[64 * half + l + 32] = (e(1) & 0xF) | ((e(3) & 0xF) << 4);
                qh[32 * half + l] =
                    (e(0) >> 4) | ((e(1) >> 4) << 2) | ((e(2) >> 4) << 4) | ((e(3) >> 4) << 6);
            }
        }
        let mut b = ql;
        b.extend(qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(0.03125));
        let e: Vec<f32> = (0..256)
            .map(|i| 0.03125 * sc[i / 16] as f32 * (q[i] as f32 - 32.0))
            .collect();
        check(GgmlType::Q6_K, &b, &e);
    }

    #[test]
    fn unsupported_types_are_refused() {
        assert!(dequantize(GgmlType::Q2_K, &vec![0; GgmlType::Q2_K.type_size()]).is_none());
        assert_eq!(GgmlType::from_id(99), None);
    }

    /// Reconstruction error of the converters against their defining bound: half a step of
    /// the block's grid, plus the f16 rounding of the stored scale (and minimum).
    #[test]
    fn quantizers_round_to_the_nearest_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 + (i as f32).sin())
            .collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_1] {
            let bytes = quantize(ty, &x).unwrap();
            assert_eq!(bytes.len(), ty.bytes_for(x.len()).unwrap());
            let y = dequantize(ty, &bytes).unwrap();
            for (block, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let (lo, hi) = xb
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let amax = lo.abs().max(hi.abs());
                let step = if ty == GgmlType::Q8_0 {
                    amax / 127.0
                } else {
                    (hi - lo) / 15.0
                };
                let tol = step / 2.0 + 2.0 * amax * 2f32.powi(-10);
                for (a, b) in xb.iter().zip(yb) {
                    assert!(
                        (a - b).abs() <= tol,
                        "{ty:?} block {block}: {a} -> {b}, tolerance {tol}"
                    );
                }
            }
        }
        let halves = dequantize(GgmlType::BF16, &quantize(GgmlType::BF16, &[1.0, -0.5]).unwrap()).unwrap();
        assert_eq!(halves, [1.0, -0.5]);
        assert!(quantize(GgmlType::Q4_K, &x).is_none());
    }
}
