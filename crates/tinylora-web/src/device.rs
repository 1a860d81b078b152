//! The browser's GPU: WebGPU, opened once per page and shared by every session.

use std::cell::RefCell;

use burn::tensor::Device;

/// What the page is told when the browser has no WebGPU at all.
pub const NO_WEBGPU: &str = "this browser has no WebGPU (navigator.gpu is missing): use a \
recent Chrome, Edge or Safari, or Firefox with WebGPU enabled, served over http(s) or localhost";

thread_local! {
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// Whether `navigator.gpu` exists (always true off the web, where wgpu picks a native API).
fn has_webgpu() -> bool {
    if !cfg!(target_family = "wasm") {
        return true;
    }
    let get = |obj: &wasm_bindgen::JsValue, key: &str| js_sys::Reflect::get(obj, &key.into()).ok();
    get(&js_sys::global().into(), "navigator")
        .and_then(|n| get(&n, "gpu"))
        .is_some_and(|gpu| !gpu.is_undefined() && !gpu.is_null())
}

/// Why the page cannot have a GPU.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `navigator.gpu` is missing.
    #[error("{NO_WEBGPU}")]
    NoWebGpu,
    /// WebGPU exists but no adapter could be opened (burn's message).
    #[error("WebGPU is present but no GPU adapter could be opened: {0}")]
    NoAdapter(String),
}

/// The WebGPU device (initialised on first use; burn's wgpu runtime can be set up only once
/// per page). Errors say plainly when the browser has no WebGPU or no usable GPU adapter.
pub async fn webgpu_device() -> Result<Device, DeviceError> {
    if let Some(device) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    if !has_webgpu() {
        return Err(DeviceError::NoWebGpu);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}
