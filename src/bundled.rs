//! The models that ship with fewstep (assets/, f16): a Fashion-MNIST teacher and the students
//! progressive distillation made from it. Natively they are compiled into the binary, so the app
//! and `fewstep sample` need no set-up; the web page fetches them from assets/ next to index.html.

pub struct BundledModel {
    /// Short name, also what `?model=` on the web page and `--model` take.
    pub name: &'static str,
    /// File name under assets/.
    pub file: &'static str,
}

pub const BUNDLED: &[BundledModel] = &[
    BundledModel {
        name: "fmnist-4step",
        file: "fmnist-steps-4.f16.safetensors",
    },
    BundledModel {
        name: "fmnist-2step",
        file: "fmnist-steps-2.f16.safetensors",
    },
    BundledModel {
        name: "fmnist-1step",
        file: "fmnist-steps-1.f16.safetensors",
    },
    BundledModel {
        name: "fmnist-teacher",
        file: "fmnist-teacher.f16.safetensors",
    },
];

/// What `fewstep sample` uses without `--model`, and what the app selects first.
pub const DEFAULT_MODEL: &str = "fmnist-4step";

pub fn find(name: &str) -> Option<&'static BundledModel> {
    BUNDLED
        .iter()
        .find(|m| m.name == name || m.file == name || format!("assets/{}", m.file) == name)
}

impl BundledModel {
    /// The file's bytes, compiled in.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn bytes(&self) -> &'static [u8] {
        match self.file {
            "fmnist-steps-4.f16.safetensors" => {
                include_bytes!("../assets/fmnist-steps-4.f16.safetensors")
            }
            "fmnist-steps-2.f16.safetensors" => {
                include_bytes!("../assets/fmnist-steps-2.f16.safetensors")
            }
            "fmnist-steps-1.f16.safetensors" => {
                include_bytes!("../assets/fmnist-steps-1.f16.safetensors")
            }
            "fmnist-teacher.f16.safetensors" => {
                include_bytes!("../assets/fmnist-teacher.f16.safetensors")
            }
            other => unreachable!("{other} is listed in BUNDLED but not compiled in"),
        }
    }
}
