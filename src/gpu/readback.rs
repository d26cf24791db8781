//! Reading buffers back. On the web nothing may block, so the core is async: copy into a mappable
//! staging buffer, submit, and await the map callback. Natively `read_blocking` polls the device.

use std::rc::Rc;

use super::batch::Binding;
use super::context::{Gpu, GpuError};
use super::pool::GpuBuffer;

impl Gpu {
    fn stage_copy(&self, src: &Rc<GpuBuffer>, bytes: u64) -> Rc<wgpu::Buffer> {
        let staging = Rc::new(self.0.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("fewstep.readback"),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
        self.copy(
            Binding::Pooled(src.clone()),
            0,
            Binding::Raw(staging.clone()),
            0,
            bytes.next_multiple_of(4),
        );
        self.flush();
        staging
    }

    /// Reads `bytes` from the start of `src` (async; works on every target).
    pub async fn read_bytes(&self, src: &Rc<GpuBuffer>, bytes: u64) -> Result<Vec<u8>, GpuError> {
        let staging = self.stage_copy(src, bytes);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait(rx)
            .await?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(format!("{e:?}")))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_bytes_blocking(
        &self,
        src: &Rc<GpuBuffer>,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        pollster::block_on(self.read_bytes(src, bytes))
    }

    /// Uploads into a fresh pooled buffer. Safe without a flush: a buffer from the free list is
    /// referenced by no recorded launch (see the pool's comment).
    pub fn upload_bytes(&self, data: &[u8]) -> Rc<GpuBuffer> {
        let buf = self.alloc(data.len() as u64);
        let padded = data.len().next_multiple_of(4);
        if padded == data.len() {
            self.0.queue.write_buffer(buf.raw(), 0, data);
        } else {
            let mut v = data.to_vec();
            v.resize(padded, 0);
            self.0.queue.write_buffer(buf.raw(), 0, &v);
        }
        buf
    }

    /// Waits (natively) until all submitted work is done; used by benchmarks for timing.
    pub async fn finish(&self) -> Result<(), GpuError> {
        self.flush();
        let (tx, rx) = futures_channel::oneshot::channel();
        self.0.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.wait(rx).await
    }

    /// Awaits a callback's result: natively by polling the device until the queue is idle; on
    /// the web the browser runs the callback and the future simply resolves.
    async fn wait<T>(&self, rx: futures_channel::oneshot::Receiver<T>) -> Result<T, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        self.0
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| GpuError::Readback("a GPU callback was dropped before it ran".into()))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish_blocking(&self) -> Result<(), GpuError> {
        pollster::block_on(self.finish())
    }
}
