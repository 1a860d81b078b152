//! Launching a raw WGSL template on a cubecl client.

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    kernel::into_contiguous,
    tensor::CubeTensor,
    template::{KernelSource, SourceKernel},
};
use cubecl::{CubeCount, CubeDim, server::KernelArguments};

/// Launch `kernel` with bindings `inputs…, output, info` (the layout every tinylora shader
/// uses) and return the new f32 output of `out_shape`. Inputs are made contiguous first.
pub fn launch_wgsl<K: KernelSource + 'static>(
    kernel: K,
    cube_dim: CubeDim,
    count: CubeCount,
    inputs: Vec<CubeTensor>,
    out_shape: Vec<usize>,
    info: &[u32],
) -> CubeTensor {
    let inputs: Vec<CubeTensor> = inputs.into_iter().map(into_contiguous).collect();
    let first = &inputs[0];
    for t in &inputs {
        first.assert_is_on_same_device(t);
        assert_eq!(t.dtype, DType::F32, "tinylora's WGSL kernels are f32 only");
    }
    let shape = Shape::from(out_shape);
    let buffer = first.client.empty(shape.num_elements() * 4);
    let out = CubeTensor::new_contiguous(first.client.clone(), first.device.clone(), shape, buffer, DType::F32);
    let info = first.client.create_from_slice(bytemuck::cast_slice(info));
    let mut bindings: Vec<_> = inputs.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(out.handle.clone().binding());
    bindings.push(info.binding());
    first.client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        count,
        KernelArguments::new().with_buffers(bindings),
    );
    out
}
