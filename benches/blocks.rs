//! Products with weights kept in ggml blocks, one matrix at a time: the path `block_matmul`
//! takes on this device, the decoding kernels forced (`block_matmul_fused`), W decoded to f32
//! and the stock matmul, and the stock matmul on f32 weights, at each row count of x; for F16
//! weights also the decoding kernels with W's tile staged as f16 (shader-f16, where the adapter
//! offers it) and as f32 (what an adapter without it runs), whichever the device's default is.
//!
//!     cargo bench --profile release --bench blocks [-- --device gpu|cpu] [--rows 9,16,32,256]
//!         [--burn-rows 1,16,256]
//!
//! Matrices: SmolLM2's 1536 × 576 (Q4_1) and Qwen2.5-0.5B's 4864 × 896 (Q8_0 and F16),
//! random values. Then the Q8_0 matrix as burn's own quantized tensor (`QuantScheme`) against
//! `block_matmul`, at `--burn-rows` (default: `--rows`; each new shape autotunes burn's matmul).
//! Each figure is the mean of 10 products summed on the device and read back once (the sum and
//! the read are included, alike for every column).

mod args;

use std::time::Instant;

use burn::tensor::quantization::{QuantScheme, QuantValue, ScaleDtype};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use clap::Parser;
use tinylora::engine::device::is_cpu;
use tinylora::formats::BlockMatrix;
use tinylora::formats::quant::GgmlType;
use tinylora::kernels::{
    DeviceBlocks, MATVEC_MAX_ROWS, ShaderF16, block_decode, block_matmul, block_matmul_fused, set_shader_f16,
    shader_f16_offered,
};

/// Products with weights kept in ggml blocks against decoded weights and burn's own quantized
/// tensor (see the header of benches/blocks.rs).
#[derive(Parser)]
#[command(bin_name = "bench-blocks")]
struct Args {
    /// Where to run
    #[arg(long, value_enum, default_value_t = args::DeviceChoice::Gpu)]
    device: args::DeviceChoice,
    /// Row counts of x, comma-separated [default: 9,16,32,256]
    #[arg(long, value_delimiter = ',', default_values_t = [9, 16, 32, 256], hide_default_value = true)]
    rows: Vec<usize>,
    /// Row counts for burn's quantized matmul, comma-separated [default: --rows]
    #[arg(long, value_delimiter = ',')]
    burn_rows: Option<Vec<usize>>,
    #[command(flatten)]
    cargo: args::CargoBench,
}

/// A synthetic `out × d_in` weight matrix, row-major, values in [−0.5, 0.5).
fn synthetic(out: usize, d_in: usize) -> Vec<f32> {
    (0..out * d_in)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect()
}

/// Milliseconds a product takes, over `reps` products summed on the device.
fn time(reps: usize, f: &dyn Fn() -> Tensor<2>) -> f64 {
    let _: f32 = f().sum().into_scalar(); // compile, autotune
    let start = Instant::now();
    let mut acc = f();
    for _ in 1..reps {
        acc = acc + f();
    }
    let _: f32 = acc.sum().into_scalar();
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn main() {
    let args = Args::parse();
    let device = args.device.device();
    let rows = args.rows;
    let f16 = shader_f16_offered(&device);
    println!("shader-f16: {}", if f16 { "offered" } else { "not offered" });
    println!("ms a product (mean of 10)     path   fused  decoded+matmul  f32 matmul  f16 tile  f32 tile");
    let matrices = [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 4864, 896),
        (GgmlType::F16, 4864, 896),
    ];
    for (ty, out, d_in) in matrices {
        let m = BlockMatrix::quantize(ty, &synthetic(out, d_in), out, d_in).expect("whole blocks");
        let w = DeviceBlocks::upload(&m, 0..out, &device);
        let w32 = block_decode(&w);
        for &n in &rows {
            let x = Tensor::<2>::random([n, d_in], Distribution::Normal(0.0, 1.0), &device);
            let path = time(10, &|| block_matmul(x.clone(), &w));
            let fused = time(10, &|| block_matmul_fused(x.clone(), &w, false));
            let decoded = time(10, &|| x.clone().matmul(block_decode(&w).transpose()));
            let f32_ = time(10, &|| x.clone().matmul(w32.clone().transpose()));
            // the decoding kernels with W's tile in f16, then in f32 (F16 weights only)
            let tiles = [ShaderF16::Always, ShaderF16::Never].map(|choice| {
                // (up to MATVEC_MAX_ROWS rows the matrix–vector kernel runs: no tile)
                if ty != GgmlType::F16
                    || n <= MATVEC_MAX_ROWS
                    || is_cpu(&device)
                    || (choice == ShaderF16::Always && !f16)
                {
                    return "-".to_string();
                }
                set_shader_f16(choice);
                let ms = time(10, &|| block_matmul_fused(x.clone(), &w, false));
                set_shader_f16(ShaderF16::Auto);
                format!("{ms:.2}")
            });
            println!(
                "{:<28} {path:>7.2} {fused:>7.2} {decoded:>15.2} {f32_:>11.2} {:>9} {:>9}",
                format!("{ty:?} {out}×{d_in}, N = {n}"),
                tiles[0],
                tiles[1]
            );
        }
    }
    let burn_rows = args.burn_rows.unwrap_or(rows);
    burn_quantized(&device, &burn_rows);
}

/// Q8_0 as burn's own quantized tensor: `QuantScheme` Q8S (value = scale · q, q in ±127) in
/// blocks of 32 along a row with f16 scales holds Q8_0's numbers exactly. Times its matmul (burn
/// dequantizes inside it on cube backends) against `block_matmul`, and prints the largest
/// difference of each from the product with W decoded to f32.
fn burn_quantized(device: &Device, rows: &[usize]) {
    let (out, d_in) = (4864, 896);
    let m = BlockMatrix::quantize(GgmlType::Q8_0, &synthetic(out, d_in), out, d_in).expect("whole blocks");
    let w = DeviceBlocks::upload(&m, 0..out, device);
    let w32 = block_decode(&w); // [out, d_in]
    // the same numbers as burn's tensor, built on the host: each 34-byte block's f16 scale d and
    // its 32 codes. (`Tensor::quantize` handed these scales gave other numbers on wgpu: 4.2M of
    // the 4.4M values differed, each block scaled by another block's scale.)
    let (mut codes, mut scales) = (
        Vec::with_capacity(out * d_in),
        Vec::with_capacity(out * d_in / 32),
    );
    for b in m.bytes.chunks_exact(34) {
        scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        codes.extend(b[2..].iter().map(|&c| c as i8));
    }
    let scheme = QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .per_block([32], ScaleDtype::F16);
    let data = TensorData::quantized(codes, [out, d_in], scheme, &scales, None);
    let wq = Tensor::<2>::from_data(data, device); // [out, d_in]
    let codes_exact = wq
        .clone()
        .dequantize()
        .equal(w32.clone())
        .all()
        .into_scalar::<bool>();
    println!(
        "\nburn's QuantScheme Q8S, blocks of 32, f16 scales, holding Q8_0 {out}×{d_in} (exact: {codes_exact})"
    );
    println!(
        "ms a product (mean of 10)   block_matmul  burn quantized matmul  max |diff| from f32: ours, burn's"
    );
    for &n in rows {
        let x = Tensor::<2>::random([n, d_in], Distribution::Normal(0.0, 1.0), device);
        let want = x.clone().matmul(w32.clone().transpose());
        let ours = time(10, &|| block_matmul(x.clone(), &w));
        let burns = time(10, &|| x.clone().matmul(wq.clone().transpose()));
        let diff = |y: Tensor<2>| (y - want.clone()).abs().max().into_scalar::<f32>();
        println!(
            "{:<28} {ours:>12.2} {burns:>22.2}   {:.1e}, {:.1e}",
            format!("N = {n}"),
            diff(block_matmul(x.clone(), &w)),
            diff(x.clone().matmul(wq.clone().transpose()))
        );
    }
}
