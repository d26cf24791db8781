//! Compute pipelines, compiled once per (kernel, constants) and cached.
//!
//! A kernel is one WGSL source (sometimes a core plus a small "loader" file, concatenated) with a
//! few `const` values prepended, so one file serves many tile sizes, transposes and modes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Identifies a specialised kernel: its name and the constants prepended to its source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub name: &'static str,
    pub consts: Vec<(&'static str, String)>,
}

impl KernelKey {
    pub fn new(name: &'static str) -> Self {
        KernelKey {
            name,
            consts: Vec::new(),
        }
    }
    pub fn u32(mut self, k: &'static str, v: u32) -> Self {
        self.consts.push((k, format!("{v}u")));
        self
    }
    pub fn f32(mut self, k: &'static str, v: f32) -> Self {
        self.consts.push((k, format!("{v:?}f")));
        self
    }
    pub fn flag(mut self, k: &'static str, v: bool) -> Self {
        self.consts.push((k, v.to_string()));
        self
    }
}

/// The WGSL text of a kernel before its constants are prepended.
pub struct KernelSource {
    pub parts: Vec<std::borrow::Cow<'static, str>>,
}

impl KernelSource {
    pub fn one(text: &'static str) -> Self {
        KernelSource {
            parts: vec![text.into()],
        }
    }
    pub fn render(&self, key: &KernelKey) -> String {
        let mut s = String::new();
        for (k, v) in &key.consts {
            s.push_str(&format!("const {k} = {v};\n"));
        }
        for p in &self.parts {
            s.push_str(p);
            s.push('\n');
        }
        s
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: RefCell<HashMap<KernelKey, Rc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn get(
        &self,
        device: &wgpu::Device,
        key: &KernelKey,
        source: impl FnOnce() -> KernelSource,
    ) -> Rc<wgpu::ComputePipeline> {
        if let Some(p) = self.map.borrow().get(key) {
            return p.clone();
        }
        let src = source();
        let text = src.render(key);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.name),
            source: wgpu::ShaderSource::Wgsl(text.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let p = Rc::new(pipeline);
        self.map.borrow_mut().insert(key.clone(), p.clone());
        p
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }
}
