//! Reading buffers back. On the web nothing may block, so the core is async: copy into a mappable
//! staging buffer, submit, and await the map callback. Natively the wait polls the device.
//!
//! Plain functions of the device, queue and buffers they are given; the device context
//! (context.rs) records the copy, submits, and wraps these into its `read_bytes`, `upload_bytes`
//! and `finish`. Errors are the text of a readback error.

use std::rc::Rc;

/// A mappable buffer to copy `bytes` into (rounded up to whole words).
pub(crate) fn staging_buffer(device: &wgpu::Device, bytes: u64) -> Rc<wgpu::Buffer> {
    Rc::new(device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("fewstep.readback"),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

/// Maps `staging` (whose copy has been submitted) and returns its first `bytes`.
pub(crate) async fn read_staging(
    device: &wgpu::Device,
    staging: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u8>, String> {
    let (tx, rx) = futures_channel::oneshot::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    wait(device, rx).await?.map_err(|e| e.to_string())?;
    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| format!("{e:?}"))?;
    let out = view[..bytes as usize].to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// Writes `data` at the start of `buffer`, padded with zeros to whole words.
pub(crate) fn write_padded(queue: &wgpu::Queue, buffer: &wgpu::Buffer, data: &[u8]) {
    let padded = data.len().next_multiple_of(4);
    if padded == data.len() {
        queue.write_buffer(buffer, 0, data);
    } else {
        let mut v = data.to_vec();
        v.resize(padded, 0);
        queue.write_buffer(buffer, 0, &v);
    }
}

/// Resolves when all work submitted to `queue` so far is done.
pub(crate) async fn work_done(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<(), String> {
    let (tx, rx) = futures_channel::oneshot::channel();
    queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    wait(device, rx).await
}

/// Awaits a callback's result: natively by polling the device until the queue is idle; on
/// the web the browser runs the callback and the future simply resolves.
async fn wait<T>(
    device: &wgpu::Device,
    rx: futures_channel::oneshot::Receiver<T>,
) -> Result<T, String> {
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| e.to_string())?;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    rx.await
        .map_err(|_| "a GPU callback was dropped before it ran".to_string())
}
