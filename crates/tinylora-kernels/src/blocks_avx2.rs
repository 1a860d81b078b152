//! ggml blocks (and rows of halves) decoded on AVX2, 32 values at a time in four 8-lane vectors,
//! for the CPU block products (`blocks_cpu.rs`). Every value is the f32 that
//! `tinylora_formats::quant`'s decoder gives (the same operations in the same order: d·q + m,
//! d·(q − 8), (d·sc)·(q − 32), ...), so
//! a product reads exactly the numbers the file holds. The codes are unpacked with byte
//! operations on 16 or 32 bytes at once, widened to i32 and converted, never stored: a decoding
//! step dots them with the rows of x as they come out of the registers.
//!
//! Every function here is `#[inline(always)]` and uses AVX2, FMA and F16C intrinsics: it must
//! only be called from a function compiled with `#[target_feature(enable = "avx2,fma,f16c")]`,
//! after those features were detected. No closures: they would not get the caller's features.

use std::arch::x86_64::*;

use tinylora_formats::quant::{GgmlType, scale_min_k4};

/// 32 consecutive values of a row, as four vectors of eight.
type Quad = [__m256; 4];

/// What is done with the decoded values: dotted with rows of x, or stored. (A trait rather
/// than a closure: closures are not compiled with the caller's target features, so their
/// intrinsics would stay calls.)
trait QuadSink {
    /// Takes values `i..i + 32` of the row.
    ///
    /// # Safety
    /// The module's features; `i + 32` within the row.
    unsafe fn take(&mut self, i: usize, q: Quad);
}

/// Σ_k x[t, k] w[k] for N rows of x, C vectors of partial sums per row.
struct Dots<const N: usize, const C: usize> {
    x: *const f32,
    d_in: usize,
    acc: [[__m256; C]; N],
}

impl<const N: usize, const C: usize> QuadSink for Dots<N, C> {
    #[inline(always)]
    unsafe fn take(&mut self, i: usize, q: Quad) {
        for t in 0..N {
            for (k, &w) in q.iter().enumerate() {
                // SAFETY: row t of x holds d_in values and i + 32 ≤ d_in
                unsafe {
                    let xv = _mm256_loadu_ps(self.x.add(t * self.d_in + i + 8 * k));
                    self.acc[t][k % C] = _mm256_fmadd_ps(xv, w, self.acc[t][k % C]);
                }
            }
        }
    }
}

/// The values stored to a row of f32.
struct Store(*mut f32);

impl QuadSink for Store {
    #[inline(always)]
    unsafe fn take(&mut self, i: usize, q: Quad) {
        for (k, &v) in q.iter().enumerate() {
            // SAFETY: the row holds i + 32 values
            unsafe { _mm256_storeu_ps(self.0.add(i + 8 * k), v) };
        }
    }
}

/// Whether rows of `d_in` values of `ty` are decoded here (the others take the portable
/// decoder): every block type, and rows of halves whose length is a multiple of 32 (every
/// model's widths; the quads cover a row exactly).
pub(crate) fn supports(ty: GgmlType, d_in: usize) -> bool {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K => true,
        F16 | BF16 => d_in.is_multiple_of(32),
        _ => false,
    }
}

/// out_t = Σ_k x[t, k] w[k] for the N rows of `x` (`[N, d_in]`, row-major) and one row w of
/// ggml blocks, decoded in registers; `C` independent sums per row of x (enough chains in all
/// to hide the FMAs' latency, few enough to stay in the 16 vector registers).
///
/// # Safety
/// AVX2, FMA and F16C (see the module's note); `supports(ty, d_in)`; `row` holds whole blocks of
/// `d_in` values.
#[inline(always)]
pub(crate) unsafe fn row_dots<const N: usize, const C: usize>(
    ty: GgmlType,
    row: &[u8],
    x: &[f32],
    d_in: usize,
) -> [f32; N] {
    assert!(x.len() >= N * d_in && row.len() == ty.bytes_for(d_in).unwrap_or(usize::MAX));
    // SAFETY: (the caller's) features; the row's quads and x's rows are in bounds (above)
    unsafe {
        let mut dots = Dots::<N, C> {
            x: x.as_ptr(),
            d_in,
            acc: [[_mm256_setzero_ps(); C]; N],
        };
        for_each_quad(ty, row, &mut dots);
        let mut out = [0.0; N];
        for (o, a) in out.iter_mut().zip(dots.acc) {
            *o = horizontal_sum(a);
        }
        out
    }
}

/// One row of blocks decoded into `out` (`d_in` values).
///
/// # Safety
/// As [`row_dots`].
#[inline(always)]
pub(crate) unsafe fn decode_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    assert!(row.len() == ty.bytes_for(out.len()).unwrap_or(usize::MAX));
    // SAFETY: (the caller's) features; the row's quads are in bounds of `out` (above)
    unsafe { for_each_quad(ty, row, &mut Store(out.as_mut_ptr())) }
}

/// Σ of every lane of the C vectors.
#[inline(always)]
unsafe fn horizontal_sum<const C: usize>(a: [__m256; C]) -> f32 {
    unsafe {
        let mut v = a[0];
        for &w in &a[1..] {
            v = _mm256_add_ps(v, w);
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// `f(i, values i..i + 32)` for every 32 values of a row of blocks of `ty`, in order.
#[inline(always)]
unsafe fn for_each_quad(ty: GgmlType, row: &[u8], f: &mut impl QuadSink) {
    unsafe {
        let (bs, ts) = (ty.block_size(), ty.type_size());
        macro_rules! each_block {
            ($decode:ident) => {
                for (k, b) in row.chunks_exact(ts).enumerate() {
                    $decode(b.as_ptr(), k * bs, f)
                }
            };
        }
        use GgmlType::*;
        match ty {
            // 32 halves (64 bytes) a quad
            F16 | BF16 => {
                for (k, c) in row.chunks_exact(64).enumerate() {
                    let p = c.as_ptr();
                    let q = if ty == F16 {
                        [f16x8(p), f16x8(p.add(16)), f16x8(p.add(32)), f16x8(p.add(48))]
                    } else {
                        [bf16x8(p), bf16x8(p.add(16)), bf16x8(p.add(32)), bf16x8(p.add(48))]
                    };
                    f.take(32 * k, q);
                }
            }
            Q4_0 => each_block!(q4_0),
            Q4_1 => each_block!(q4_1),
            Q5_0 => each_block!(q5_0),
            Q5_1 => each_block!(q5_1),
            Q8_0 => each_block!(q8_0),
            Q4_K => each_block!(q4_k),
            Q5_K => each_block!(q5_k),
            Q6_K => each_block!(q6_k),
            _ => unreachable!("{ty:?} is not decoded on AVX2 (see `supports`)"),
        }
    }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// The eight f16 values at `p` as f32 (exact: F16C's conversion).
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

/// The eight bf16 values at `p` as f32 (exact: a bf16 is the top half of an f32).
#[inline(always)]
unsafe fn bf16x8(p: *const u8) -> __m256 {
    unsafe {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
}

/// `[e(q[0]), .., e(q[3])]`, written out (a closure would not get the caller's target
/// features).
macro_rules! map4 {
    ($q:expr, $v:ident => $e:expr) => {{
        let q = $q;
        [
            {
                let $v = q[0];
                $e
            },
            {
                let $v = q[1];
                $e
            },
            {
                let $v = q[2];
                $e
            },
            {
                let $v = q[3];
                $e
            },
        ]
    }};
}

/// The low eight bytes of `b` as f32.
#[inline(always)]
unsafe fn u8x8(b: __m128i) -> __m256 {
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)) }
}

/// The eight signed bytes at `p` as f32.
#[inline(always)]
unsafe fn i8x8(p: *const u8) -> __m256 {
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
}

/// 32 byte codes as f32, in order.
#[inline(always)]
unsafe fn widen(codes: __m256i) -> Quad {
    unsafe {
        let (lo, hi) = (
            _mm256_castsi256_si128(codes),
            _mm256_extracti128_si256::<1>(codes),
        );
        [
            u8x8(lo),
            u8x8(_mm_srli_si128::<8>(lo)),
            u8x8(hi),
            u8x8(_mm_srli_si128::<8>(hi)),
        ]
    }
}

/// The codes of a 32-value block's 16 nibble bytes at `p`: value j is the low nibble of byte
/// j, value j + 16 its high nibble.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    unsafe {
        let qs = _mm_loadu_si128(p as *const __m128i);
        let m4 = _mm_set1_epi8(0xF);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(qs), m4), _mm_and_si128(qs, m4))
    }
}

/// The low and the high nibbles of 32 bytes, each as 32 byte codes.
#[inline(always)]
unsafe fn split_nibbles(q: __m256i) -> [__m256i; 2] {
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        [
            _mm256_and_si256(q, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
        ]
    }
}

/// The fifth bits of a Q5 block (bit j of `qh` for value j) as bytes 16 or 0.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    unsafe {
        let qh = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
        // byte j takes byte j/8 of qh, then keeps bit j%8 of it
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }
}

/// d·q + m for every value of the quad.
#[inline(always)]
unsafe fn scale_shift(q: Quad, d: f32, m: f32) -> Quad {
    unsafe {
        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        map4!(q, v => _mm256_add_ps(_mm256_mul_ps(d, v), m))
    }
}

/// d·(q − off) for every value of the quad.
#[inline(always)]
unsafe fn shift_scale(q: Quad, off: f32, d: f32) -> Quad {
    unsafe {
        let (d, off) = (_mm256_set1_ps(d), _mm256_set1_ps(off));
        map4!(q, v => _mm256_mul_ps(d, _mm256_sub_ps(v, off)))
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; x = d (q − 8).
#[inline(always)]
unsafe fn q4_0(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        f.take(i, shift_scale(widen(nibbles(p.add(2))), 8.0, f16_at(p)));
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; x = d q + m.
#[inline(always)]
unsafe fn q4_1(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        f.take(
            i,
            scale_shift(widen(nibbles(p.add(4))), f16_at(p), f16_at(p.add(2))),
        );
    }
}

/// Q5_0: `d: f16, qh: u32, qs: [u8; 16]`; x = d (q5 − 16).
#[inline(always)]
unsafe fn q5_0(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let codes = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
        f.take(i, shift_scale(widen(codes), 16.0, f16_at(p)));
    }
}

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; x = d q5 + m.
#[inline(always)]
unsafe fn q5_1(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let codes = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)));
        f.take(i, scale_shift(widen(codes), f16_at(p), f16_at(p.add(2))));
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`; x = d q.
#[inline(always)]
unsafe fn q8_0(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let d = _mm256_set1_ps(f16_at(p));
        let q = p.add(2);
        let q = [i8x8(q), i8x8(q.add(8)), i8x8(q.add(16)), i8x8(q.add(24))];
        f.take(i, map4!(q, v => _mm256_mul_ps(d, v)));
    }
}

/// Q4_K: `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; x = (d·sc)·q − dmin·m per
/// sub-block of 32; each 32 bytes of `qs` hold two sub-blocks (low, then high nibbles).
#[inline(always)]
unsafe fn q4_k(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let scales = std::slice::from_raw_parts(p.add(4), 12);
        for pair in 0..4 {
            let q = _mm256_loadu_si256(p.add(16 + 32 * pair) as *const __m256i);
            for (half, codes) in split_nibbles(q).into_iter().enumerate() {
                let (sc, m) = scale_min_k4(2 * pair + half, scales);
                f.take(
                    i + 64 * pair + 32 * half,
                    scale_shift(widen(codes), d * sc, -(dmin * m)),
                );
            }
        }
    }
}

/// Q5_K: `d, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; Q4_K with a fifth bit
/// per value: sub-block s takes bit s of `qh[l]`.
#[inline(always)]
unsafe fn q5_k(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let scales = std::slice::from_raw_parts(p.add(4), 12);
        let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
        for pair in 0..4 {
            let q = _mm256_loadu_si256(p.add(48 + 32 * pair) as *const __m256i);
            for (half, nib) in split_nibbles(q).into_iter().enumerate() {
                let s = 2 * pair + half;
                let bit = _mm256_set1_epi8(1 << s);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                let codes = _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(16)));
                let (sc, m) = scale_min_k4(s, scales);
                f.take(i + 32 * s, scale_shift(widen(codes), d * sc, -(dmin * m)));
            }
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`, 16 sub-blocks of 16;
/// x = (d·sc)·(q6 − 32). Per half of 128 values, byte l of `ql` holds values l and l + 64
/// (low, high nibble), byte l + 32 values l + 32 and l + 96, and byte l of `qh` their top two
/// bits (bits 0–1, 2–3, 4–5, 6–7 for values l, l + 32, l + 64, l + 96).
#[inline(always)]
unsafe fn q6_k(p: *const u8, i: usize, f: &mut impl QuadSink) {
    unsafe {
        let d = f16_at(p.add(208));
        let top = _mm256_set1_epi8(0x30);
        for half in 0..2 {
            let [a_lo, a_hi] = split_nibbles(_mm256_loadu_si256(p.add(64 * half) as *const __m256i));
            let [b_lo, b_hi] = split_nibbles(_mm256_loadu_si256(p.add(64 * half + 32) as *const __m256i));
            let h = _mm256_loadu_si256(p.add(128 + 32 * half) as *const __m256i);
            // (bits 2j..2j+2 of h) << 4, for the four groups of 32 values; the 16-bit shifts'
            // carries between bytes fall outside 0x30
            let codes = [
                _mm256_or_si256(a_lo, _mm256_and_si256(_mm256_slli_epi16::<4>(h), top)),
                _mm256_or_si256(b_lo, _mm256_and_si256(_mm256_slli_epi16::<2>(h), top)),
                _mm256_or_si256(a_hi, _mm256_and_si256(h, top)),
                _mm256_or_si256(b_hi, _mm256_and_si256(_mm256_srli_epi16::<2>(h), top)),
            ];
            let sc = p.add(192 + 8 * half) as *const i8;
            for (k, codes) in codes.into_iter().enumerate() {
                // values 0..16 of the group take scale 2k, values 16..32 scale 2k + 1
                let s0 = _mm256_set1_ps(d * *sc.add(2 * k) as f32);
                let s1 = _mm256_set1_ps(d * *sc.add(2 * k + 1) as f32);
                let off = _mm256_set1_ps(32.0);
                let q = widen(codes);
                let q = map4!(q, v => _mm256_sub_ps(v, off));
                f.take(
                    i + 128 * half + 32 * k,
                    [
                        _mm256_mul_ps(s0, q[0]),
                        _mm256_mul_ps(s0, q[1]),
                        _mm256_mul_ps(s1, q[2]),
                        _mm256_mul_ps(s1, q[3]),
                    ],
                );
            }
        }
    }
}
