//! Choosing the adapter and what to ask of it: the features fewstep's kernels want, and
//! cooperative matrices where mixed precision is asked for.

use super::{Gpu, GpuOptions, Precision};

impl Gpu {
    /// The adapter to use; when none fits, what was asked for and what there is, in words.
    pub(super) async fn pick_adapter(
        instance: &wgpu::Instance,
        opts: &GpuOptions,
    ) -> Result<wgpu::Adapter, String> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(name) = &opts.adapter_name {
            let want = name.to_lowercase();
            let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
            let seen: Vec<String> = all
                .iter()
                .map(|a| {
                    let i = a.get_info();
                    format!("'{}' ({:?})", i.name, i.backend)
                })
                .collect();
            return all
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .ok_or_else(|| {
                    format!(
                        "FEWSTEP_ADAPTER='{name}' is part of no adapter's name here (the \
                         adapters: {}); give part of one of those names, or unset it",
                        if seen.is_empty() {
                            "none".to_string()
                        } else {
                            seen.join(", ")
                        }
                    )
                });
        }
        let _ = opts;
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// The features fewstep asks for on `adapter`: subgroups where the size is fixed (the fast
    /// GEMM family) and timestamp queries. The app passes these to eframe so that its device and
    /// the engine's are one.
    pub fn wanted_features(adapter: &wgpu::Adapter) -> wgpu::Features {
        let info = adapter.get_info();
        let mut features = wgpu::Features::empty();
        let fixed_subgroup =
            info.subgroup_min_size == info.subgroup_max_size && info.subgroup_min_size >= 4;
        if adapter.features().contains(wgpu::Features::SUBGROUP) && fixed_subgroup {
            features |= wgpu::Features::SUBGROUP;
        }
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        features
    }

    /// The features a device on `adapter` is asked for with `opts` ([`Self::wanted_features`],
    /// and cooperative matrices where mixed precision is asked for and the adapter has them),
    /// and the matrix and subgroup sizes, or why there are none. The app asks eframe for the
    /// same (`app::device_descriptor`), so that its samples are the command line's.
    pub fn device_features(
        adapter: &wgpu::Adapter,
        opts: &GpuOptions,
    ) -> (wgpu::Features, Result<(u32, u32), String>) {
        let mut features = Self::wanted_features(adapter);
        let mixed = opts.effective_precision() == Precision::Mixed;
        let coop = if let Some(why) = &opts.coop_lost {
            Err(why.clone())
        } else if !mixed {
            Err(match opts.precision {
                Some(Precision::F32) => "precision f32 was asked for".to_string(),
                _ => "precision f32 is the default; --precision mixed asks for them".to_string(),
            })
        } else {
            Self::coop_config(adapter, features)
        };
        if coop.is_ok() {
            features |= Self::COOP_FEATURES;
        }
        (features, coop)
    }

    /// What the cooperative-matrix family needs of a device.
    pub(super) const COOP_FEATURES: wgpu::Features =
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            .union(wgpu::Features::SHADER_F16)
            .union(wgpu::Features::SUBGROUP);
}
