//! The app without a window: its state logic (choosing a model and a step count, scrubbing and
//! playing the steps, starting and stopping runs, which rows a comparison has, the web page's
//! query string), the kernel that draws samples into textures (against a CPU reference), and the
//! GPU worker end to end (its samples equal `Sampler`'s, i.e. what `fewstep sample` writes).
//! Tests by subject: `state.rs` (models, steps, scrubbing, runs, comparisons, events),
//! `links.rs` (settings kept, links, commands, the query string), `worker.rs` (textures, the GPU
//! worker, the native Train tab).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use eframe::egui::{self, TextureId};
use eframe::Storage;
use fewstep::app::engine::{self, Event, Job, ModelInfo, SharedDevice};
use fewstep::app::state::{AppState, Frame, PLAY_FPS, SCRUB_CAP_BYTES};
use fewstep::app::texture::{grid_size, GridPainter, PAD};
use fewstep::app::StartOptions;
use fewstep::bundled;
use fewstep::diffusion::{load_model_bytes, parse_model, SampleOptions, Sampler, SamplerKind};
use fewstep::tensor::Tensor;

/// unorm8 conversion rounds to the nearest of 256 levels: half a level, plus slack for the
/// driver's float-to-unorm rounding.
const UNORM_TOL: f64 = 0.6 / 255.0;

fn info(name: &str) -> ModelInfo {
    let b = bundled::find(name).expect("bundled");
    let (meta, tensors) = parse_model(std::path::Path::new(b.file), b.bytes()).expect("parses");
    ModelInfo {
        name: b.name.into(),
        meta,
        params: tensors.iter().map(|t| t.data.len()).sum(),
        file_bytes: b.bytes().len(),
    }
}

fn loaded_state() -> AppState {
    let mut s = AppState::default();
    for b in bundled::BUNDLED {
        s.add_model(info(b.name));
    }
    s
}

fn frame(i: usize) -> Frame {
    Frame {
        step: i,
        t: 1.0 - i as f64 / 4.0,
        z: TextureId::User(2 * i as u64),
        x_hat: (i > 0).then_some(TextureId::User(2 * i as u64 + 1)),
        ms: 10.0,
        bytes: 1000,
    }
}

/// eframe's storage in memory: what a restart of the app reads back.
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);
impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

/// Reads an rgba8 texture back (rows padded to 256 bytes, as copies require).
fn read_texture(gpu: &fewstep::gpu::Gpu, tex: &wgpu::Texture, size: [u32; 2]) -> Vec<u8> {
    let row = (size[0] * 4).div_ceil(256) * 256;
    let buf = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (row * size[1]) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        tex.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: None,
            },
        },
        wgpu::Extent3d {
            width: size[0],
            height: size[1],
            depth_or_array_layers: 1,
        },
    );
    gpu.queue().submit([enc.finish()]);
    buf.slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    gpu.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let data = buf.slice(..).get_mapped_range().expect("mapped").to_vec();
    let mut out = Vec::new();
    for y in 0..size[1] as usize {
        out.extend_from_slice(&data[y * row as usize..y * row as usize + size[0] as usize * 4]);
    }
    out
}

/// Counts what the reducer registers and frees, handing out fresh ids (no renderer needed).
#[derive(Default)]
struct CountingTextures {
    next: u64,
    live: std::collections::HashSet<TextureId>,
}

impl fewstep::app::events::TextureSink for CountingTextures {
    fn register(&mut self, _tex: &fewstep::app::texture::GridTexture) -> Option<TextureId> {
        self.next += 1;
        let id = TextureId::User(self.next);
        self.live.insert(id);
        Some(id)
    }
    fn free(&mut self, ids: Vec<TextureId>) {
        for id in ids {
            assert!(
                self.live.remove(&id),
                "{id:?} freed twice or never registered"
            );
        }
    }
}

mod links;
mod state;
mod worker;
