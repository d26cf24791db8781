//! Draws batches of samples straight from engine tensors into GPU textures that egui shows
//! (shaders/to_image.wgsl): the app never copies a step's images through the CPU.

use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// Background texels between and around the images of a grid.
pub const PAD: u32 = 1;

/// A texture holding a grid of images, and its size in texels.
pub struct GridTexture {
    pub texture: wgpu::Texture,
    pub size: [u32; 2],
}

impl GridTexture {
    /// GPU memory it takes (RGBA8).
    pub fn bytes(&self) -> u64 {
        4 * self.size[0] as u64 * self.size[1] as u64
    }
}

pub struct GridPainter {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Columns of the grid for n images: about square.
pub fn grid_cols(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

/// Texture size [width, height] of a grid of n images of h x w in `cols` columns.
pub fn grid_size(n: usize, cols: usize, h: usize, w: usize) -> [u32; 2] {
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    [
        cols as u32 * (w as u32 + PAD) + PAD,
        rows as u32 * (h as u32 + PAD) + PAD,
    ]
}

impl GridPainter {
    pub fn new(gpu: &Gpu) -> GridPainter {
        let device = gpu.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("to_image"),
            source: wgpu::ShaderSource::Wgsl(crate::tensor::registry::TO_IMAGE_WGSL.into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("to_image"),
            entries: &[
                entry(
                    0,
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                ),
                entry(
                    1,
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                ),
                entry(
                    2,
                    wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: wgpu::TextureFormat::Rgba8Unorm,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                ),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("to_image"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("to_image"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        GridPainter { pipeline, layout }
    }

    /// Encodes and submits the drawing of `x` [N, C, H, W] into a new texture (no wait), in an
    /// about square grid.
    pub fn paint(&self, gpu: &Gpu, x: &Tensor) -> GridTexture {
        self.paint_cols(gpu, x, grid_cols(x.dim(0)))
    }

    /// The same in `cols` columns (a comparison row: all images side by side).
    pub fn paint_cols(&self, gpu: &Gpu, x: &Tensor, cols: usize) -> GridTexture {
        let [n, c, h, w] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
        let cols = cols.clamp(1, n.max(1));
        let size = grid_size(n, cols, h, w);
        let device = gpu.device();
        // The tensor's producers may still sit in the batch: submit them first.
        gpu.flush();
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("samples"),
            size: wgpu::Extent3d {
                width: size[0],
                height: size[1],
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::STORAGE_BINDING
                | wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let params = crate::tensor::registry::ToImageParams {
            n: n as u32,
            c: c as u32,
            h: h as u32,
            w: w as u32,
            cols: cols as u32,
            pad: PAD,
            tex_w: size[0],
            tex_h: size[1],
        };
        // Written through the queue rather than mapped at creation: Chromium's windowed
        // SwiftShader refused mapped-at-creation buffers here.
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("to_image params"),
            size: std::mem::size_of_val(&params) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue()
            .write_buffer(&uniform, 0, bytemuck::bytes_of(&params));
        let view = texture.create_view(&Default::default());
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("to_image"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: x.raw_buffer(),
                        offset: 0,
                        size: wgpu::BufferSize::new((x.numel() * 4) as u64),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
            ],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(size[0].div_ceil(8), size[1].div_ceil(8), 1);
        }
        gpu.queue().submit([encoder.finish()]);
        GridTexture { texture, size }
    }
}
