//! Products with a frozen weight kept in ggml blocks (`shaders/block_value.wgsl`): y = x Wᵀ
//! without W ever held in f32 at rest.
//!
//! On the cube backend, by the rows N of the other operand:
//! - N ≤ [`MATVEC_MAX_ROWS`] (decoding): `block_matvec.wgsl`, W decoded in registers;
//! - more (decoding larger batches, prefill, training): `block_tiled.wgsl`, W decoded tile by
//!   tile into workgroup memory inside the product;
//! - except on a software rasterizer beyond [`SOFTWARE_TILED_MAX_ROWS`] rows: W decoded to f32
//!   once for this product (`block_decode.wgsl`) and the stock tiled matmul, the decoded copy
//!   living only for that product.
//!
//! The backward ∂L/∂x = G W takes the same split: `block_tiled.wgsl` with W untransposed, or
//! the decoded copy (W gets no gradient: it is frozen). On Flex (CPU), in Rust
//! (`crate::blocks_cpu`): the matrix–vector product on the blocks, and a decoded copy of W for a
//! stock matmul beyond it.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::ops::FloatTensorOps;
use burn::backend::{
    AutodiffBackend, Backend,
    tensor::{FloatTensor, IntTensor},
};
use burn_cubecl::{CubeBackend, kernel::into_contiguous, tensor::CubeTensor};
use cubecl::ir::{ElemType, FloatKind};
use tinylora_formats::quant::GgmlType;

use crate::BlockBackend;
use crate::launch::{WG, Wgsl, dims, empty, launch};

/// Most rows of x the register-decoding product takes (decoding batches up to this size).
pub const MATVEC_MAX_ROWS: usize = 8;

/// Invocations that share a row of W in `block_matvec.wgsl` (a power of two, at least
/// [`MATVEC_MAX_ROWS`]: the row's first N invocations write its N results).
const MATVEC_LANES: usize = 16;
const _: () = assert!(MATVEC_LANES.is_power_of_two() && MATVEC_LANES >= MATVEC_MAX_ROWS);

/// The template values of a type: its ggml id, values and bytes a block, and the shared
/// decoding functions.
fn decode_values(ty: GgmlType) -> Vec<(&'static str, String)> {
    let [ty_id, qk, ts] = [ty.id(), ty.block_size() as u32, ty.type_size() as u32];
    let decode = include_str!("../../../shaders/block_value.wgsl")
        .replace("{{ ty }}", &ty_id.to_string())
        .replace("{{ qk }}", &qk.to_string())
        .replace("{{ ts }}", &ts.to_string());
    vec![
        ("ty", ty_id.to_string()),
        ("qk", qk.to_string()),
        ("ts", ts.to_string()),
        ("wg", WG.to_string()),
        ("decode", decode),
    ]
}

/// The ggml type of an id the engine passed, checked.
pub(crate) fn block_type(ty: u32) -> GgmlType {
    let t = GgmlType::from_id(ty).filter(|t| t.can_dequantize() && *t != GgmlType::F32);
    t.unwrap_or_else(|| panic!("block kernels: ggml type {ty} is not a supported block type"))
}

/// 32-bit words a row of `d_in` values of `ty` takes on the device (its bytes, padded).
pub(crate) fn row_words(ty: GgmlType, d_in: usize) -> usize {
    ty.bytes_for(d_in).expect("row size fits usize").div_ceil(4)
}

/// Check that `words` words a row hold `d_in` values of `ty` (whole blocks).
pub(crate) fn check_row_words(op: &str, ty: GgmlType, d_in: usize, words: usize) {
    assert!(
        d_in.is_multiple_of(ty.block_size()) && words == row_words(ty, d_in),
        "{op}: {words} words a row do not hold {d_in} {ty:?} values"
    );
}

/// (rows, words per row) of the blocks, checked against d_in.
fn block_dims(op: &str, blocks: &CubeTensor, ty: GgmlType, d_in: usize) -> (usize, usize) {
    let bd = dims(blocks);
    assert!(bd.len() == 2, "{op}: blocks must be 2-D, not {bd:?}");
    check_row_words(op, ty, d_in, bd[1]);
    (bd[0], bd[1])
}

/// W `[rows, d_in]` as f32 (`block_decode.wgsl`).
fn decode(blocks: CubeTensor, ty: GgmlType, d_in: usize) -> CubeTensor {
    let (rows, words) = block_dims("block_decode", &blocks, ty, d_in);
    let blocks = into_contiguous(blocks);
    let out = empty(&blocks, vec![rows, d_in]);
    let kernel = Wgsl {
        source: include_str!("../../../shaders/block_decode.wgsl"),
        values: decode_values(ty),
    };
    let info = [rows as u32, d_in as u32, words as u32];
    // one invocation per quad of a row
    let invocations = rows * d_in.div_ceil(4);
    launch(kernel, invocations.div_ceil(WG as usize), &[&blocks, &out], &info);
    out
}

/// y = x Wᵀ `[N, rows]` for N ≤ [`MATVEC_MAX_ROWS`] (`block_matvec.wgsl`).
fn matvec(x: CubeTensor, blocks: CubeTensor, ty: GgmlType, d_in: usize) -> CubeTensor {
    let (rows, words) = block_dims("block_matmul", &blocks, ty, d_in);
    let [n, c] = dims(&x)[..] else {
        panic!("block_matmul: x must be 2-D, not {:?}", dims(&x))
    };
    assert!(c == d_in, "block_matmul: x must be [N, {d_in}], not [{n}, {c}]");
    let (x, blocks) = (
        crate::launch::input(x, "block_matmul", "x"),
        into_contiguous(blocks),
    );
    let y = empty(&x, vec![n, rows]);
    // compiled for N rounded up to a power of two (1, 2, 4 or 8): the partial sums kept, written
    // to workgroup memory and reduced are N's, not MATVEC_MAX_ROWS's
    let nmax = n.next_power_of_two().min(MATVEC_MAX_ROWS);
    let mut values = decode_values(ty);
    values.push(("nmax", nmax.to_string()));
    values.push(("wg_nmax", (WG as usize * nmax).to_string()));
    values.push(("lanes", MATVEC_LANES.to_string()));
    let kernel = Wgsl {
        source: include_str!("../../../shaders/block_matvec.wgsl"),
        values,
    };
    let info = [n as u32, rows as u32, d_in as u32, words as u32];
    // MATVEC_LANES invocations a row: `launch` counts workgroups of WG invocations
    let groups = rows.div_ceil(WG as usize / MATVEC_LANES);
    launch(kernel, groups, &[&x, &blocks, &y], &info);
    y
}

/// y = x Wᵀ `[N, rows]` (`transpose` false, `a` = x `[N, d_in]`) or y = g W `[N, d_in]`
/// (`transpose` true, `a` = g `[N, rows]`), W decoded inside the product
/// (`block_tiled.wgsl`).
fn tiled(a: CubeTensor, blocks: CubeTensor, ty: GgmlType, d_in: usize, transpose: bool) -> CubeTensor {
    let op = if transpose {
        "block_matmul_w"
    } else {
        "block_matmul"
    };
    let (rows, words) = block_dims(op, &blocks, ty, d_in);
    let [n, c] = dims(&a)[..] else {
        panic!("{op}: the left operand must be 2-D, not {:?}", dims(&a))
    };
    let (c_len, o_len) = if transpose { (rows, d_in) } else { (d_in, rows) };
    assert!(
        c == c_len,
        "{op}: the left operand must be [N, {c_len}], not [{n}, {c}]"
    );
    let (a, blocks) = (
        crate::launch::input(a, op, "the left operand"),
        into_contiguous(blocks),
    );
    let y = empty(&a, vec![n, o_len]);
    let t = TiledShape::for_rows(n);
    let (nq, oq) = (t.inv_n * t.rq, t.inv_o * t.oq_i);
    let f16_tile = ty == GgmlType::F16 && f16_staging(a.client.properties());
    let mut values = decode_values(ty);
    values.extend([
        ("enable", if f16_tile { "enable f16;" } else { "" }.into()),
        ("wq", if f16_tile { "f16" } else { "f32" }.into()),
        ("transpose", u32::from(transpose).to_string()),
        ("tk", t.tk.to_string()),
        ("inv_n", t.inv_n.to_string()),
        ("inv_o", t.inv_o.to_string()),
        ("rq", t.rq.to_string()),
        ("oq_i", t.oq_i.to_string()),
        ("acc_len", (4 * t.rq * t.oq_i).to_string()),
        ("tk_nq", (t.tk * nq).to_string()),
        ("tk_oq", (t.tk * oq).to_string()),
    ]);
    let kernel = Wgsl {
        source: include_str!("../../../shaders/block_tiled.wgsl"),
        values,
    };
    let info = [n as u32, rows as u32, d_in as u32, words as u32];
    // one workgroup per tile of y: 4 nq rows × 4 oq outputs
    let groups = n.div_ceil(4 * nq) * o_len.div_ceil(4 * oq);
    launch(kernel, groups, &[&a, &blocks, &y], &info);
    y
}

/// When `block_tiled.wgsl` stages F16 weights in workgroup memory as f16 (WGSL's `enable f16`,
/// which needs the adapter's shader-f16: Vulkan's shaderFloat16 with 16-bit storage, Metal,
/// DX12 with SM 6.2; cubecl requests every feature an adapter has). Halves are always decoded
/// with core WGSL's `unpack2x16float`; f16 staging stores those values back as f16, the same
/// values in half the bytes (subnormals included where the adapter keeps f16 denormals, which
/// `tests/blocks.rs` checks), so every choice gives the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaderF16 {
    /// On a hardware adapter that offers shader-f16 (the default). A software rasterizer
    /// stages f32: lavapipe offers shader-f16 but converts halves in software, and staging f16
    /// made the tiled product 1–23% slower there (benches/README.md, "Compressed weights").
    Auto,
    /// On every adapter that offers shader-f16.
    Always,
    /// Never: f32 staging (what an adapter without shader-f16, such as the browser's
    /// SwiftShader, always runs).
    Never,
}

/// The process-wide [`ShaderF16`] choice, as its discriminant.
static SHADER_F16: AtomicU8 = AtomicU8::new(ShaderF16::Auto as u8);

/// Set when the kernels stage F16 weights as f16 (process-wide; lets tests and benchmarks run
/// both stagings on one device).
pub fn set_shader_f16(choice: ShaderF16) {
    SHADER_F16.store(choice as u8, Ordering::Relaxed);
}

/// Whether a device with `props` offers shader-f16 (cubecl registers F16 where it does).
fn offers_f16(props: &cubecl::ir::DeviceProperties) -> bool {
    props.supports_type(ElemType::Float(FloatKind::F16))
}

/// Whether `block_tiled.wgsl` stages F16 weights as f16 on a device with `props`.
fn f16_staging(props: &cubecl::ir::DeviceProperties) -> bool {
    let offered = offers_f16(props);
    match SHADER_F16.load(Ordering::Relaxed) {
        c if c == ShaderF16::Always as u8 => offered,
        c if c == ShaderF16::Never as u8 => false,
        _ => offered && props.identity.physical.is_some(),
    }
}

/// `f` of the properties of `device` when it is a wgpu device.
#[cfg(not(target_family = "wasm"))]
fn on_wgpu(device: &burn::tensor::Device, f: impl FnOnce(&cubecl::ir::DeviceProperties) -> bool) -> bool {
    use burn::backend::DispatchDevice;
    use cubecl::wgpu::WgpuRuntime;
    use cubecl_runtime::runtime::Runtime;
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Cube(cubecl::Device::Wgpu(d)) => f(<WgpuRuntime as Runtime>::client(&d).properties()),
        _ => false,
    }
}

/// Whether `device` is a wgpu device whose adapter offers shader-f16.
#[cfg(not(target_family = "wasm"))]
pub fn shader_f16_offered(device: &burn::tensor::Device) -> bool {
    on_wgpu(device, offers_f16)
}

/// Whether the products stage F16 weights as f16 on `device` (a wgpu device that offers
/// shader-f16, as [`set_shader_f16`] chooses); what the load line reports.
#[cfg(not(target_family = "wasm"))]
pub fn stages_f16(device: &burn::tensor::Device) -> bool {
    on_wgpu(device, f16_staging)
}

/// The tiling of `block_tiled.wgsl`: invocations inv_n × inv_o (= WG), each computing rq × oq_i
/// quads of y, tk contraction indices staged a step.
struct TiledShape {
    tk: usize,
    inv_n: usize,
    inv_o: usize,
    rq: usize,
    oq_i: usize,
}

impl TiledShape {
    /// Up to 32 rows: tiles of 16 rows × 128 outputs, each invocation 4 × 8 (of the pieces tried
    /// on lavapipe for 9–32 rows, 4 × 4 in tiles of 16 × 64 and 8 × 4 or 4 × 8 in 16 × 128, the
    /// fastest; benches/README.md, "Compressed weights"). Beyond: 64 × 64, each invocation
    /// 8 × 8, so that W is decoded once for every 64 rows. Workgroup memory: 16 × (4 + 32)
    /// and 16 × (16 + 16) quads, 9 and 8 KiB, within WebGPU's 16 KiB.
    fn for_rows(n: usize) -> Self {
        if n <= 32 {
            TiledShape {
                tk: 16,
                inv_n: 4,
                inv_o: 16,
                rq: 1,
                oq_i: 2,
            }
        } else {
            TiledShape {
                tk: 16,
                inv_n: 8,
                inv_o: 8,
                rq: 2,
                oq_i: 2,
            }
        }
    }
}

/// Most rows of the other operand for which a software rasterizer (lavapipe, SwiftShader: a
/// device with no card behind it) decodes W inside the product; beyond them, W decoded once for
/// the stock tiled matmul was faster on lavapipe (by about 5% at 24–32 rows, 2× at 256), the
/// product being bound by arithmetic there (benches/README.md, "Compressed weights"). A GPU
/// always decodes inside the product: on the H200 the decoded copy (its extra launch, 4 bytes a
/// value written and read back) had `auto` prefill at a third of f32's speed; the kernels that
/// replace it there are not yet measured on a GPU (the GPU kit's visit Q will: `tests/blocks.rs`
/// in stage 1, `bench-blocks` in stage 2b).
pub const SOFTWARE_TILED_MAX_ROWS: usize = 16;

/// Whether W is decoded inside the product for `n` rows of the other operand on `like`'s
/// device, rather than decoded to f32 for the stock matmul.
fn decode_inside(like: &CubeTensor, n: usize) -> bool {
    n <= SOFTWARE_TILED_MAX_ROWS || like.client.properties().identity.physical.is_some()
}

impl BlockBackend for CubeBackend {
    fn block_matmul(x: CubeTensor, blocks: CubeTensor, ty: u32, d_in: usize) -> CubeTensor {
        let xd = dims(&x);
        assert!(
            xd.len() == 2 && xd[1] == d_in,
            "block_matmul: x must be [N, {d_in}], not {xd:?}"
        );
        if decode_inside(&x, xd[0]) {
            return Self::block_matmul_fused(x, blocks, ty, d_in, false);
        }
        let w = decode(blocks, block_type(ty), d_in); // [rows, d_in]
        Self::float_matmul(x, Self::float_transpose(w))
    }

    fn block_matmul_w(g: CubeTensor, blocks: CubeTensor, ty: u32, d_in: usize) -> CubeTensor {
        if decode_inside(&g, dims(&g)[0]) {
            return Self::block_matmul_fused(g, blocks, ty, d_in, true);
        }
        Self::float_matmul(g, decode(blocks, block_type(ty), d_in))
    }

    fn block_matmul_fused(
        a: CubeTensor,
        blocks: CubeTensor,
        ty: u32,
        d_in: usize,
        transpose: bool,
    ) -> CubeTensor {
        let ty = block_type(ty);
        if !transpose && dims(&a).first().is_some_and(|&n| n <= MATVEC_MAX_ROWS) {
            return matvec(a, blocks, ty, d_in);
        }
        tiled(a, blocks, ty, d_in, transpose)
    }

    fn block_decode(blocks: CubeTensor, ty: u32, d_in: usize) -> CubeTensor {
        decode(blocks, block_type(ty), d_in)
    }
}

#[derive(Debug)]
struct BlockMatmulBackward;

/// What the backward keeps: the blocks themselves (no copy: a handle), their type and width.
#[derive(Debug, Clone)]
struct BlockState<B: Backend> {
    blocks: IntTensor<B>,
    ty: u32,
    d_in: usize,
}

// y = x Wᵀ: ∂L/∂x = G W, with W decoded again for the product.
impl<B: BlockBackend> Backward<B, 1> for BlockMatmulBackward {
    type State = BlockState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [N, rows]
        if let Some(node) = node_x {
            let BlockState { blocks, ty, d_in } = ops.state;
            grads.register::<B>(node.id, B::block_matmul_w(g, blocks, ty, d_in)); // [N, d_in]
        }
    }
}

impl<B: BlockBackend, C: CheckpointStrategy> BlockBackend for Autodiff<B, C> {
    fn block_matmul(
        x: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        ty: u32,
        d_in: usize,
    ) -> FloatTensor<Self> {
        let prep = BlockMatmulBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let y = B::block_matmul(x.into_primitive(), blocks.clone(), ty, d_in);
                prep.finish(BlockState { blocks, ty, d_in }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::block_matmul(x.into_primitive(), blocks, ty, d_in)),
        }
    }

    fn block_matmul_w(
        g: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        ty: u32,
        d_in: usize,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::block_matmul_w(
            <Self as AutodiffBackend>::inner(g),
            blocks,
            ty,
            d_in,
        ))
    }

    fn block_matmul_fused(
        a: FloatTensor<Self>,
        blocks: IntTensor<Self>,
        ty: u32,
        d_in: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        let a = <Self as AutodiffBackend>::inner(a);
        <Self as AutodiffBackend>::from_inner(B::block_matmul_fused(a, blocks, ty, d_in, transpose))
    }

    fn block_decode(blocks: IntTensor<Self>, ty: u32, d_in: usize) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::block_decode(blocks, ty, d_in))
    }
}
