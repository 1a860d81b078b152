//! Picking where the engine runs: burn's wgpu backend (Vulkan, Metal, DX12, or WebGPU in a
//! browser), or natively burn's Flex CPU backend.

use burn::tensor::{Device, DeviceKind};

/// The default wgpu device: the first discrete/integrated GPU, or lavapipe (software Vulkan)
/// on machines without one.
pub fn default_device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

/// Discrete GPU `index` (in wgpu's order) through wgpu: the GPU of one process of a
/// data-parallel run on a machine with several.
pub fn gpu_device(index: usize) -> Device {
    Device::wgpu(DeviceKind::DiscreteGpu(index))
}

/// burn's Flex backend: pure-Rust CPU kernels (SIMD, one thread per core). On a machine with no
/// GPU it runs the engine much faster than software Vulkan; the adapter ops run there as stock
/// burn ops instead of WGSL.
#[cfg(not(target_family = "wasm"))]
pub fn cpu_device() -> Device {
    keep_freed_memory();
    Device::flex()
}

/// Whether `device` is burn's Flex CPU backend.
pub fn is_cpu(device: &Device) -> bool {
    #[cfg(not(target_family = "wasm"))]
    return *device == Device::flex();
    #[cfg(target_family = "wasm")]
    {
        let _ = device;
        false
    }
}

/// The CPU backend allocates every op's output afresh, many of them megabytes large. glibc's
/// defaults hand blocks above a small, adaptive threshold to `mmap` and give freed memory at the
/// heap's top back to the OS, so each such buffer is page-faulted and zeroed again on every op:
/// about a tenth of a CPU forward's time in `perf`. Raising the mmap threshold to its maximum
/// (32 MiB) and never trimming keeps freed memory for the next op: a 16 × 64-token forward of
/// SmolLM2 took 2.25–2.35 s instead of 2.49–2.64 s, the default job 50–52 s instead of
/// 53–59 s, same peak memory (benches/README.md). Process-wide, set once.
#[cfg(not(target_family = "wasm"))]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes the allocator's thresholds; it is thread-safe
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TOP_PAD, 256 << 20);
            }
        });
    }
}

/// Whether wgpu finds a hardware adapter (a discrete, integrated or virtual GPU), not only a
/// software rasterizer such as lavapipe. cubecl answers this without creating a device.
#[cfg(not(target_family = "wasm"))]
pub fn hardware_gpu_available() -> bool {
    <cubecl::wgpu::WgpuRuntime as cubecl_runtime::runtime::Runtime>::is_available()
}

/// Whether `device`'s adapter offers shader-f16, and whether products with F16 weights stage
/// them as f16 there (not on a software rasterizer), else as f32: the same numbers.
#[cfg(not(target_family = "wasm"))]
pub use tinylora_kernels::{shader_f16_offered, stages_f16};
