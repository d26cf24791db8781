//! What the adapter can do, as `fewstep info` reports it: subgroups, features, limits.

use super::Gpu;

impl Gpu {
    pub fn has_subgroups(&self) -> bool {
        self.0.features.contains(wgpu::Features::SUBGROUP)
    }
    pub fn subgroup_size(&self) -> u32 {
        self.0.info.subgroup_min_size
    }

    /// A multi-line description for `fewstep info`.
    pub fn describe(&self) -> String {
        let i = &self.0.info;
        let l = &self.0.limits;
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(s, "adapter:   {} ({:?})", i.name, i.device_type);
        let _ = writeln!(s, "backend:   {:?}", i.backend);
        let _ = writeln!(s, "driver:    {} {}", i.driver, i.driver_info);
        let _ = writeln!(
            s,
            "vendor:    0x{:04x}  device: 0x{:04x}",
            i.vendor, i.device
        );
        let _ = writeln!(s, "features:  {:?}", self.0.features);
        let _ = writeln!(
            s,
            "subgroups: size {}..{}",
            i.subgroup_min_size, i.subgroup_max_size
        );
        let _ = writeln!(
            s,
            "limits:    storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations/workgroup {}, \
             workgroups/dim {}, storage buffers/stage {}, uniform binding {} KiB",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
            l.max_uniform_buffer_binding_size >> 10,
        );
        s
    }
}
