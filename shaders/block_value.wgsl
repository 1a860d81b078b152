// Values of a row of ggml blocks, included by `block_decode.wgsl`, `block_matvec.wgsl` and
// `block_tiled.wgsl` (not a kernel of its own). `blocks` is the u32 array the including kernel
// binds.
//
// value4(row0, k):     W[row, k .. k + 4] for the row whose first byte is `row0` (4-byte
//                      aligned), k a multiple of 4 and k + 4 ≤ d_in: the four values share their
//                      block's (or sub-block's) scales, read once, and their codes come from one
//                      32-bit read. Blocks hold whole quads, so this covers every value of a
//                      block type.
// half_value(row0, k): W[row, k] of a row of halves, for the partial quad at the end of a row
//                      whose length is not a multiple of 4.
// The formulas and their order are those of `crates/tinylora-formats/src/quant.rs`: both
// functions give the host decoder's numbers exactly.

const TY: u32 = {{ ty }}u;
const QK: u32 = {{ qk }}u;
const TS: u32 = {{ ts }}u;

fn byte_at(off: u32) -> u32 {
    return (blocks[off >> 2u] >> ((off & 3u) * 8u)) & 0xFFu;
}

// The 4 bytes from byte `off` on, any alignment (little-endian, as the file stores them).
fn u32_at(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if (s == 0u) {
        return blocks[i];
    }
    return (blocks[i] >> s) | (blocks[i + 1u] << (32u - s));
}

// The four bytes of `w`, each shifted right by `s` and masked with `m`.
fn bytes4(w: u32, s: u32, m: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> vec4<u32>(s, 8u + s, 16u + s, 24u + s)) & vec4<u32>(m);
}

fn u16_at(off: u32) -> u32 {
    return byte_at(off) | (byte_at(off + 1u) << 8u);
}

fn f16_at(off: u32) -> f32 {
    return unpack2x16float(u16_at(off)).x;
}

fn i8_at(off: u32) -> f32 {
    return f32(i32(byte_at(off) << 24u) >> 24u);
}

// The 6-bit scale (c = 0) or min (c = 1) of sub-block j of a Q4_K / Q5_K block.
fn scale_min_k4(s: u32, j: u32, c: u32) -> f32 {
    if (j < 4u) {
        return f32(byte_at(s + j + 4u * c) & 63u);
    }
    if (c == 0u) {
        return f32((byte_at(s + j + 4u) & 0xFu) | ((byte_at(s + j - 4u) >> 6u) << 4u));
    }
    return f32((byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u));
}

// W[row, k] of a row of halves (F16, BF16): the last, partial quad of a row whose length is not
// a multiple of 4 (block types hold whole quads, and `value4` covers them).
fn half_value(row0: u32, k: u32) -> f32 {
    let h = u16_at(row0 + 2u * k);
    if (TY == 1u) {
        return unpack2x16float(h).x;
    }
    return bitcast<f32>(h << 16u);
}

fn value4(row0: u32, k: u32) -> vec4<f32> {
    if (TY == 1u || TY == 30u) { // F16, BF16: two words of two halves
        let w0 = u32_at(row0 + 2u * k);
        let w1 = u32_at(row0 + 2u * k + 4u);
        if (TY == 1u) {
            return vec4<f32>(unpack2x16float(w0), unpack2x16float(w1));
        }
        return bitcast<vec4<f32>>(vec4<u32>(w0 << 16u, w0 & 0xFFFF0000u, w1 << 16u, w1 & 0xFFFF0000u));
    }
    let b = row0 + (k / QK) * TS;
    let j = k % QK;
    // the nibble of a 32-value block's qs[j % 16]: low for j < 16
    let sh = select(4u, 0u, j < 16u);
    switch TY {
        case 2u: { // Q4_0: d (q − 8)
            let q = bytes4(u32_at(b + 2u + j % 16u), sh, 0xFu);
            return f16_at(b) * (vec4<f32>(q) - 8.0);
        }
        case 3u: { // Q4_1: d q + m
            let q = bytes4(u32_at(b + 4u + j % 16u), sh, 0xFu);
            return f16_at(b) * vec4<f32>(q) + f16_at(b + 2u);
        }
        case 6u: { // Q5_0: d (q5 − 16), the fifth bits in the 32-bit qh
            let h = (vec4<u32>(u32_at(b + 2u)) >> (vec4<u32>(0u, 1u, 2u, 3u) + j)) & vec4<u32>(1u);
            let q = bytes4(u32_at(b + 6u + j % 16u), sh, 0xFu) | (h << vec4<u32>(4u));
            return f16_at(b) * (vec4<f32>(q) - 16.0);
        }
        case 7u: { // Q5_1: d q5 + m
            let h = (vec4<u32>(u32_at(b + 4u)) >> (vec4<u32>(0u, 1u, 2u, 3u) + j)) & vec4<u32>(1u);
            let q = bytes4(u32_at(b + 8u + j % 16u), sh, 0xFu) | (h << vec4<u32>(4u));
            return f16_at(b) * vec4<f32>(q) + f16_at(b + 2u);
        }
        case 8u: { // Q8_0: d q, q signed bytes
            let w = bitcast<vec4<i32>>(vec4<u32>(u32_at(b + 2u + j)) << vec4<u32>(24u, 16u, 8u, 0u));
            return f16_at(b) * vec4<f32>(w >> vec4<u32>(24u));
        }
        case 12u, 13u: { // Q4_K / Q5_K: d·sc·q − dmin·m, sub-blocks of 32
            let pair = j / 64u;
            let l = j % 32u;
            let hi = (j % 64u) >= 32u;
            let s = 2u * pair + u32(hi);
            let qs = select(b + 16u, b + 48u, TY == 13u);
            var q = bytes4(u32_at(qs + 32u * pair + l), select(0u, 4u, hi), 0xFu);
            if (TY == 13u) {
                q = q | (bytes4(u32_at(b + 16u + l), s, 1u) << vec4<u32>(4u));
            }
            let d1 = f16_at(b) * scale_min_k4(b + 4u, s, 0u);
            let m1 = f16_at(b + 2u) * scale_min_k4(b + 4u, s, 1u);
            return d1 * vec4<f32>(q) - m1;
        }
        case 14u: { // Q6_K: d·sc·(q6 − 32), sub-blocks of 16
            let half = j / 128u;
            let quarter = (j % 128u) / 32u;
            let l = j % 32u;
            let lo = u32_at(b + 64u * half + l + 32u * (quarter & 1u));
            let nib = bytes4(lo, select(0u, 4u, quarter >= 2u), 0xFu);
            let hib = bytes4(u32_at(b + 128u + 32u * half + l), 2u * quarter, 3u);
            let q = vec4<i32>(nib | (hib << vec4<u32>(4u))) - 32;
            let sc = i8_at(b + 192u + 8u * half + l / 16u + 2u * quarter);
            return f16_at(b + 208u) * sc * vec4<f32>(q);
        }
        default: {
            return vec4<f32>();
        }
    }
}
