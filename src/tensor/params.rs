//! Uniform parameter structs: each kernel's `struct Params` (binding 0) has a Rust twin declared
//! with [`wgsl_params!`], which records its field names and offsets. The GPU-free kernel test
//! (tests/suite/kernel_registry.rs) compares them with the WGSL struct as naga lays it out, so a
//! field added, moved or retyped on one side only fails with the field's name instead of
//! reading the wrong values on some adapter.

/// A Rust struct that mirrors a WGSL uniform struct field by field.
pub trait WgslParams: bytemuck::Pod {
    /// The Rust type's name (for messages).
    const NAME: &'static str;
    /// (field name, byte offset), in declaration order. Names starting with `_` are padding:
    /// their place is checked through the other offsets and the size, not by name.
    fn fields() -> Vec<(&'static str, usize)>;
    /// The bytes a launch hands to binding 0.
    fn bytes(&self) -> Vec<u8> {
        bytemuck::bytes_of(self).to_vec()
    }
}

/// Declares a `#[repr(C)]` parameter struct (all fields public within the crate) and its
/// [`WgslParams`] description. Field names must be the WGSL member names.
macro_rules! wgsl_params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty),*
        }
        impl $crate::tensor::params::WgslParams for $name {
            const NAME: &'static str = stringify!($name);
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*]
            }
        }
    };
}
pub(crate) use wgsl_params;

/// The Rust side of one kernel's parameter struct, as the registry lists it.
#[derive(Clone, Debug)]
pub struct ParamsLayout {
    pub rust_name: &'static str,
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
    /// Bytes after the fixed fields that the launcher appends (the multi-tensor kernels' table
    /// of `vec4<u32>` per tensor slot: WGSL `tab: array<vec4<u32>, K>`).
    pub tail: usize,
}

impl ParamsLayout {
    pub fn of<P: WgslParams>() -> Self {
        ParamsLayout {
            rust_name: P::NAME,
            size: std::mem::size_of::<P>(),
            fields: P::fields(),
            tail: 0,
        }
    }
    pub fn with_tail(mut self, bytes: usize) -> Self {
        self.tail = bytes;
        self
    }
}
