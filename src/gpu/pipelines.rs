//! Compute pipelines, compiled once per (kernel, constants) and cached.
//!
//! A kernel is one WGSL source (sometimes a core plus a small "loader" file, concatenated) with a
//! few `const` values prepended, so one file serves many tile sizes, transposes and modes.
//!
//! Each pipeline gets an explicit bind group layout made from the binding declarations in its
//! source ([`declared_bindings`]), not the automatic one: an automatic layout drops every binding
//! the entry point does not use, so a kernel whose optional input is compiled out (a bias, a
//! second operand) would need a different set of buffers per variant, and kernels used to read
//! such inputs times 0 to keep them, which turned a NaN in the stand-in buffer into NaN outputs.

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
    /// `name K=v K=v`: how errors, the launch histogram and the profiler name a variant.
    pub fn label(&self) -> String {
        let mut s = self.name.to_string();
        for (k, v) in &self.consts {
            s.push_str(&format!(" {k}={v}"));
        }
        s
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
    /// The kernel's text: its `enable` directives first (WGSL wants them before any
    /// declaration, and a part may bring one: the cooperative-matrix core), then the key's
    /// constants, then the parts.
    pub fn render(&self, key: &KernelKey) -> String {
        let mut s = String::new();
        let is_enable = |l: &str| l.trim_start().starts_with("enable ");
        for p in &self.parts {
            for l in p.lines().filter(|l| is_enable(l)) {
                if !s.lines().any(|have| have == l) {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        for (k, v) in &key.consts {
            s.push_str(&format!("const {k} = {v};\n"));
        }
        for p in &self.parts {
            for l in p.lines().filter(|l| !is_enable(l)) {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// What a kernel declares at one binding of group 0 (the only group fewstep's kernels use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// The bindings a kernel's WGSL declares, as (binding, kind), sorted by binding. Every
/// declaration sits on one line, `@group(0) @binding(N) var<uniform|storage, read|read_write>`;
/// anything else with `@binding` on it is an error naming the line (a kernel that does not
/// follow the convention is a bug in fewstep, caught on its first launch in the tests).
pub fn declared_bindings(wgsl: &str) -> Result<Vec<(u32, BindingKind)>, String> {
    let mut out = Vec::new();
    for line in wgsl.lines() {
        let code = line.split("//").next().unwrap_or("");
        let Some(at) = code.find("@binding(") else {
            continue;
        };
        let bad = |why: &str| format!("binding declaration `{}`: {why}", line.trim());
        if !code.contains("@group(0)") {
            return Err(bad("only group 0 is supported"));
        }
        let rest = &code[at + "@binding(".len()..];
        let close = rest
            .find(')')
            .ok_or_else(|| bad("no closing parenthesis"))?;
        let binding: u32 = rest[..close]
            .trim()
            .parse()
            .map_err(|_| bad("the binding is not a number"))?;
        let var = code
            .find("var<")
            .map(|v| &code[v + 4..])
            .ok_or_else(|| bad("no `var<...>`"))?;
        let space: String = var[..var.find('>').ok_or_else(|| bad("no `>`"))?]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let kind = match space.as_str() {
            "uniform" => BindingKind::Uniform,
            "storage" | "storage,read" => BindingKind::StorageRead,
            "storage,read_write" => BindingKind::StorageReadWrite,
            other => return Err(bad(&format!("address space `{other}` is not supported"))),
        };
        if out.iter().any(|&(b, _)| b == binding) {
            return Err(bad("binding declared twice"));
        }
        out.push((binding, kind));
    }
    out.sort_by_key(|&(b, _)| b);
    Ok(out)
}

fn layout_entry(binding: u32, kind: BindingKind) -> wgpu::BindGroupLayoutEntry {
    let ty = match kind {
        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
        BindingKind::StorageRead => wgpu::BufferBindingType::Storage { read_only: true },
        BindingKind::StorageReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
    };
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A kernel's bindings as [`declared_bindings`] returns them.
type BindingSignature = Vec<(u32, BindingKind)>;

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: RefCell<HashMap<KernelKey, Rc<wgpu::ComputePipeline>>>,
    /// Pipeline layouts by binding signature: kernels that declare the same bindings share one.
    layouts: RefCell<HashMap<BindingSignature, Rc<wgpu::PipelineLayout>>>,
}

impl PipelineCache {
    /// The pipeline of `key`, built on a miss inside a validation error scope: a kernel that
    /// does not build is recorded in `fault` naming the variant (reported by the next readback),
    /// and not cached. What is returned then is wgpu's invalid pipeline, whose launches the
    /// device ignores.
    pub fn get(
        &self,
        device: &wgpu::Device,
        fault: &super::fault::FaultSlot,
        key: &KernelKey,
        source: impl FnOnce() -> KernelSource,
    ) -> Rc<wgpu::ComputePipeline> {
        if let Some(p) = self.map.borrow().get(key) {
            return p.clone();
        }
        let src = source();
        let text = src.render(key);
        // Records a failure of this kernel (callable from the browser's later answer too).
        let failed = {
            let fault = fault.clone();
            let kernel = key.label();
            move |message: String| {
                super::fault::record_fault(
                    &fault,
                    super::fault::Fault::Kernel {
                        kernel: kernel.clone(),
                        message,
                    },
                )
            }
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bindings = declared_bindings(&text).unwrap_or_else(|e| {
            failed(e);
            Vec::new()
        });
        let layout = self.layout(device, key.name, bindings);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.name),
            source: wgpu::ShaderSource::Wgsl(text.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.name),
            layout: Some(&layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let p = Rc::new(pipeline);
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Natively the scope's result is ready at once (no GPU round trip).
            if let Some(e) = pollster::block_on(scope.pop()) {
                failed(e.to_string());
                return p;
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            // The browser answers later; the fault is then reported by the next readback.
            let pop = scope.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = pop.await {
                    failed(e.to_string());
                }
            });
        }
        self.map.borrow_mut().insert(key.clone(), p.clone());
        p
    }

    fn layout(
        &self,
        device: &wgpu::Device,
        name: &str,
        bindings: BindingSignature,
    ) -> Rc<wgpu::PipelineLayout> {
        if let Some(l) = self.layouts.borrow().get(&bindings) {
            return l.clone();
        }
        let entries: Vec<_> = bindings.iter().map(|&(b, k)| layout_entry(b, k)).collect();
        let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let layout = Rc::new(
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(name),
                bind_group_layouts: &[Some(&group)],
                immediate_size: 0,
            }),
        );
        self.layouts.borrow_mut().insert(bindings, layout.clone());
        layout
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn keys(&self) -> Vec<KernelKey> {
        self.map.borrow().keys().cloned().collect()
    }
}
