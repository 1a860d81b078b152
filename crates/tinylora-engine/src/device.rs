//! Picking the GPU: burn's wgpu backend (Vulkan, Metal, DX12, or WebGPU in a browser).

use burn::tensor::{Device, DeviceKind};

/// The default wgpu device: the first discrete/integrated GPU, or lavapipe (software Vulkan)
/// on machines without one.
pub fn default_device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}
