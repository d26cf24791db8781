//! The models that ship with fewstep (assets/, f16): a Fashion-MNIST teacher and the students
//! progressive distillation made from it. Natively they are compiled into the binary, so the app
//! and `fewstep sample` need no set-up; the web page fetches them from assets/ next to index.html.

pub struct BundledModel {
    /// Short name, also what `?model=` on the web page and `--model` take.
    pub name: &'static str,
    /// File name under assets/.
    pub file: &'static str,
    /// The file's size in bytes (read at compile time; the web page's loading bar counts bytes).
    pub size: usize,
}

pub const BUNDLED: &[BundledModel] = &[
    BundledModel {
        name: "fmnist-4step",
        file: "fmnist-steps-4.f16.safetensors",
        size: include_bytes!("../assets/fmnist-steps-4.f16.safetensors").len(),
    },
    BundledModel {
        name: "fmnist-2step",
        file: "fmnist-steps-2.f16.safetensors",
        size: include_bytes!("../assets/fmnist-steps-2.f16.safetensors").len(),
    },
    BundledModel {
        name: "fmnist-1step",
        file: "fmnist-steps-1.f16.safetensors",
        size: include_bytes!("../assets/fmnist-steps-1.f16.safetensors").len(),
    },
    BundledModel {
        name: "fmnist-teacher",
        file: "fmnist-teacher.f16.safetensors",
        size: include_bytes!("../assets/fmnist-teacher.f16.safetensors").len(),
    },
];

/// What `fewstep sample` uses without `--model`, and what the app selects first.
pub const DEFAULT_MODEL: &str = "fmnist-4step";

pub fn find(name: &str) -> Option<&'static BundledModel> {
    BUNDLED.iter().find(|m| m.matches(name))
}

/// The evaluation classifier `fewstep eval` and `fewstep recipe` use for Fashion-MNIST: compiled
/// in natively, so the distance works from any folder.
pub const CLASSIFIER: BundledModel = BundledModel {
    name: "fmnist-classifier",
    file: "fmnist-classifier.safetensors",
    size: include_bytes!("../assets/fmnist-classifier.safetensors").len(),
};

impl BundledModel {
    /// Whether `name` names this file: its short name, its file name, or assets/FILE.
    pub fn matches(&self, name: &str) -> bool {
        self.name == name || self.file == name || format!("assets/{}", self.file) == name
    }

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
            "fmnist-classifier.safetensors" => {
                include_bytes!("../assets/fmnist-classifier.safetensors")
            }
            other => unreachable!("{other} is listed in BUNDLED but not compiled in"),
        }
    }
}

/// The eval figures and provenance of a bundle folder (`fewstep recipe` writes one as
/// `manifest.json`; assets/manifest.json describes the bundled models).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always "fewstep-bundle".
    pub format: String,
    pub version: u32,
    /// What the figures are and where they were measured, in words.
    #[serde(default)]
    pub note: String,
    pub dataset: String,
    /// The adapter the bundle was made (and evaluated) on.
    pub adapter: String,
    /// When it was made (UTC, RFC 3339).
    pub date: String,
    /// The commands that made it, in order.
    pub commands: Vec<String>,
    /// Seconds per stage, and `total`.
    #[serde(default)]
    pub seconds: std::collections::BTreeMap<String, f64>,
    pub eval: ManifestEval,
    pub models: Vec<ManifestModel>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ManifestEval {
    /// Generated (and test) images per row of the distance.
    pub samples: usize,
    /// Images per row of the agreement PSNR.
    pub psnr_samples: usize,
    /// The teacher's DDIM step count the PSNR is measured against.
    pub reference_steps: usize,
    /// The classifier whose features give the distance (None: no distance).
    #[serde(default)]
    pub classifier: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ManifestModel {
    /// Short name (`fmnist-4step`), as BUNDLED names them.
    pub name: String,
    /// File name in the bundle folder.
    pub file: String,
    /// Sampling steps (None: the teacher).
    pub steps: Option<u32>,
    pub sha256: String,
    pub bytes: u64,
    /// This model at its step count (a teacher: at the reference step count, or its own row).
    #[serde(default)]
    pub figures: Option<Figures>,
    /// The teacher's plain DDIM at the same step count, for comparison.
    #[serde(default)]
    pub ddim: Option<Figures>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    pub steps: usize,
    /// Fréchet distance on the classifier's features (lower is better).
    pub frechet: Option<f64>,
    /// Agreement with the teacher's reference samples from the same noise, dB.
    pub psnr_vs_teacher: Option<f64>,
    pub ms_per_image: f64,
}

impl Figures {
    /// "distance 1.890, PSNR 25.82 dB, 1.2 ms/image"
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(f) = self.frechet {
            parts.push(format!("distance {f:.3}"));
        }
        if let Some(p) = self.psnr_vs_teacher {
            parts.push(format!("PSNR {p:.2} dB"));
        }
        if self.ms_per_image > 0.0 {
            parts.push(format!("{:.2} ms/image", self.ms_per_image));
        }
        if parts.is_empty() {
            "no figures".into()
        } else {
            parts.join(", ")
        }
    }
}

impl ManifestModel {
    /// One line: the model's figures against plain DDIM at the same step count.
    pub fn summary(&self) -> Option<String> {
        let f = self.figures.as_ref()?;
        Some(match (&self.steps, &self.ddim) {
            (Some(_), Some(d)) => format!(
                "{} step{}: {}; plain DDIM {}",
                f.steps,
                if f.steps == 1 { "" } else { "s" },
                f.describe(),
                d.describe()
            ),
            (None, _) => format!("teacher, {} DDIM steps: {}", f.steps, f.describe()),
            _ => format!(
                "{} step{}: {}",
                f.steps,
                if f.steps == 1 { "" } else { "s" },
                f.describe()
            ),
        })
    }
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if m.format != "fewstep-bundle" {
            return Err(format!("format `{}`, not fewstep-bundle", m.format));
        }
        Ok(m)
    }
    pub fn model_by_file(&self, file: &str) -> Option<&ManifestModel> {
        self.models.iter().find(|m| m.file == file)
    }
    pub fn model_by_name(&self, name: &str) -> Option<&ManifestModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// The manifest of the bundled models (assets/manifest.json, compiled in).
pub fn manifest() -> Option<&'static Manifest> {
    static PARSED: std::sync::OnceLock<Option<Manifest>> = std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| Manifest::parse(include_str!("../assets/manifest.json")).ok())
        .as_ref()
}

/// The eval line of a bundled model, by its short name (what the Models tab shows).
pub fn figures(name: &str) -> Option<String> {
    manifest()?.model_by_name(name)?.summary()
}

/// Bytes of all bundled model files together.
pub fn total_size() -> usize {
    BUNDLED.iter().map(|m| m.size).sum()
}
