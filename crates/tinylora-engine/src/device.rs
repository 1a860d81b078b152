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
    Device::flex()
}

/// Whether wgpu finds a hardware adapter (a discrete, integrated or virtual GPU), not only a
/// software rasterizer such as lavapipe. cubecl answers this without creating a device.
#[cfg(not(target_family = "wasm"))]
pub fn hardware_gpu_available() -> bool {
    <cubecl::wgpu::WgpuRuntime as cubecl_runtime::runtime::Runtime>::is_available()
}
