//! What the app does when it opens (`StartOptions`): the web page's query string or
//! `fewstep app --model … --steps …` natively, parsed and written back, so a link reproduces a
//! picture; and the `fewstep sample` command that makes the same picture.

use crate::diffusion::SamplerKind;

/// What the app does when it opens: a model to select and a run to start (the web page's query
/// string, or `fewstep app --model … --steps …` natively), so a link reproduces a picture.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StartOptions {
    pub model: Option<String>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
    pub count: Option<usize>,
    pub sampler: Option<SamplerKind>,
    pub clip: Option<bool>,
    /// A class-conditional model's class, by name or number (`class=Sneaker`).
    pub class: Option<String>,
    /// The classifier-free guidance weight w (`guidance=2`).
    pub guidance: Option<f32>,
    /// A strip from seed A's noise to seed B's (`interpolate=A,B`; interpolate.rs) instead of
    /// one seed's images.
    pub interpolate: Option<(u64, u64)>,
    /// Start a sample run as soon as the models are loaded.
    pub run: bool,
    /// Start a comparison (the Compare tab's defaults) instead of a sample run.
    pub compare: bool,
    /// Natively: when the started run is done, save the window as this PNG and close.
    pub screenshot: Option<String>,
    /// On the web: start a distillation in the Train tab (`distill=MODEL&to=2&updates=…&batch=…
    /// &lr=…&seed=…`, `from=` for a teacher's step count) instead of a sample run.
    pub distill: Option<DistillStart>,
    /// On the web: train a teacher in the Train tab (`train=tiny&updates=…&batch=…&lr=…&seed=…`).
    pub train: Option<TrainStart>,
    /// On the web: the Train tab's run checkpoints every this many updates (`checkpoint=N`;
    /// 0: never) instead of by time (tests, and a visitor who wants more or fewer).
    pub checkpoint: Option<u64>,
    /// On the web: the page recreated the app on a new device after losing one (not from the
    /// address): models kept before come back, a lost run is offered again.
    pub recovered: bool,
    /// On the web: whether the GEMM kernels are tuned on this GPU between steps (`tune=on|off`;
    /// unset: on for GPUs, off for a software adapter), as FEWSTEP_TUNE natively.
    pub tune: Option<bool>,
    /// On the web: made-up kernel times for the tuner (`tune_clock=SEED`, tests), as
    /// FEWSTEP_TEST_TUNE_CLOCK natively.
    pub tune_clock: Option<u64>,
}

/// A teacher training asked for in the address; unset values keep the tab's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainStart {
    pub preset: String,
    pub updates: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
    /// `classes=1`: class-conditional; `uncond=P`: its label dropout.
    pub classes: bool,
    pub uncond_prob: Option<f32>,
}

/// A distillation asked for in the address; unset values keep the tab's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DistillStart {
    pub teacher: String,
    pub from_steps: Option<usize>,
    pub to_steps: Option<usize>,
    pub updates: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
    /// `guided=1`: guided distillation, w drawn from `wrange=MIN,MAX`, stage 1 taking
    /// `stage1=N` updates.
    pub guided: bool,
    pub w_range: Option<[f32; 2]>,
    pub guidance_updates: Option<u64>,
}

impl StartOptions {
    /// Parses `model=…&steps=4&seed=1&count=16&sampler=ddim&clip=0&run=1` (percent-encoded, `+`
    /// for a space, as browsers write it); any of model, steps or seed starts a run unless
    /// `run=0` says otherwise. Unknown keys are ignored, bad values are reported.
    pub fn from_query(query: &str) -> Result<StartOptions, String> {
        let mut o = StartOptions::default();
        let mut run = None;
        let mut distill = DistillStart::default();
        let mut train: Option<String> = None;
        let (mut classes, mut uncond_prob) = (false, None);
        let q = query.trim_start_matches('?');
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode_query_part(k)?, decode_query_part(v)?);
            let bad = |what: &str| format!("in the address, {k}={v}: {what}");
            fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("in the address, '{v}' is not a whole number"))
            }
            let switch = |v: &str| match v {
                "" | "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(bad("give 1 or 0")),
            };
            match k.as_str() {
                "model" => o.model = Some(v.clone()),
                "steps" => o.steps = Some(v.parse().map_err(|_| bad("steps must be a number"))?),
                "seed" => o.seed = Some(v.parse().map_err(|_| bad("seed must be a number"))?),
                "count" => o.count = Some(v.parse().map_err(|_| bad("count must be a number"))?),
                "sampler" => {
                    o.sampler = Some(match v.as_str() {
                        "ddim" => SamplerKind::Ddim,
                        "ancestral" => SamplerKind::Ancestral,
                        _ => return Err(bad("sampler is ddim or ancestral")),
                    })
                }
                "clip" => o.clip = Some(switch(&v)?),
                "class" => o.class = Some(v.clone()),
                "guidance" => {
                    let w: f32 = v.parse().map_err(|_| bad("guidance must be a number"))?;
                    if !(w.is_finite() && w >= 0.0) {
                        return Err(bad("guidance is a weight >= 0"));
                    }
                    o.guidance = Some(w);
                }
                "interpolate" => {
                    o.interpolate = Some(
                        crate::diffusion::interpolate::parse_seeds(&v)
                            .map_err(|e| format!("in the address, interpolate={e}"))?,
                    )
                }
                "run" => run = Some(switch(&v)?),
                "distill" => distill.teacher = v.clone(),
                "train" => train = Some(v.clone()),
                "checkpoint" => o.checkpoint = Some(number(&v)?),
                "tune" => {
                    o.tune = Some(match v.as_str() {
                        "on" | "1" => true,
                        "off" | "0" => false,
                        _ => return Err(bad("tune is on (time the kernels on this GPU) or off")),
                    })
                }
                "tune_clock" => o.tune_clock = Some(number(&v)?),
                "classes" => classes = switch(&v)?,
                "uncond" => {
                    let p: f32 = v.parse().map_err(|_| bad("uncond must be a number"))?;
                    if !(0.0..1.0).contains(&p) {
                        return Err(bad("uncond is a probability in [0, 1), such as 0.1"));
                    }
                    uncond_prob = Some(p);
                }
                "guided" => distill.guided = switch(&v)?,
                "wrange" => {
                    let range = v
                        .split_once(',')
                        .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]))
                        .filter(|[a, b]: &[f32; 2]| *a >= 0.0 && b > a)
                        .ok_or_else(|| bad("give MIN,MAX with 0 <= MIN < MAX, such as 0,4"))?;
                    distill.w_range = Some(range);
                }
                "stage1" => distill.guidance_updates = Some(number(&v)?),
                "from" => distill.from_steps = Some(number(&v)?),
                "to" => distill.to_steps = Some(number(&v)?),
                "updates" => distill.updates = Some(number(&v)?),
                "batch" => distill.batch = Some(number(&v)?),
                "lr" => distill.lr = Some(v.parse().map_err(|_| bad("lr must be a number"))?),
                _ => {}
            }
        }
        if let Some(preset) = train {
            if !crate::nn::PRESETS.contains(&preset.as_str()) || preset == "cifar" {
                return Err(format!(
                    "in the address, train={preset}: give tiny or small"
                ));
            }
            o.train = Some(TrainStart {
                preset,
                updates: distill.updates,
                batch: distill.batch,
                lr: distill.lr,
                seed: o.seed.take(),
                classes,
                uncond_prob,
            });
            o.run = false;
            return Ok(o);
        }
        if !distill.teacher.is_empty() {
            distill.seed = o.seed.take();
            o.distill = Some(distill);
            o.run = false;
            return Ok(o);
        }
        o.run = run.unwrap_or(
            o.model.is_some() || o.steps.is_some() || o.seed.is_some() || o.interpolate.is_some(),
        );
        Ok(o)
    }
}

impl StartOptions {
    /// The query string [`Self::from_query`] reads back as these options (a link to a picture).
    pub fn to_query(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // What a URL's query may hold as it is (RFC 3986 unreserved): fmnist-4step stays legible.
        const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let mut parts = Vec::new();
        if let Some(m) = &self.model {
            parts.push(format!("model={}", utf8_percent_encode(m, ESCAPE)));
        }
        if let Some(v) = self.steps {
            parts.push(format!("steps={v}"));
        }
        if let Some((a, b)) = self.interpolate {
            parts.push(format!("interpolate={a},{b}"));
        } else if let Some(v) = self.seed {
            parts.push(format!("seed={v}"));
        }
        if let Some(v) = self.count {
            parts.push(format!("count={v}"));
        }
        if let Some(k) = self.sampler {
            parts.push(format!("sampler={}", sampler_word(k)));
        }
        if let Some(c) = self.clip {
            parts.push(format!("clip={}", c as u8));
        }
        if let Some(c) = &self.class {
            parts.push(format!("class={}", utf8_percent_encode(c, ESCAPE)));
        }
        if let Some(w) = self.guidance {
            parts.push(format!("guidance={w}"));
        }
        parts.push(format!("run={}", self.run as u8));
        parts.join("&")
    }

    /// The `fewstep sample` command that draws the same picture into sample.png.
    pub fn sample_command(&self) -> String {
        let mut c = String::from("fewstep sample");
        if let Some(m) = &self.model {
            if m.contains(char::is_whitespace) {
                c += &format!(" --model '{m}'");
            } else {
                c += &format!(" --model {m}");
            }
        }
        if let Some(v) = self.steps {
            c += &format!(" --steps {v}");
        }
        if let Some((a, b)) = self.interpolate {
            c += &format!(" --interpolate {a},{b}");
        } else if let Some(v) = self.seed {
            c += &format!(" --seed {v}");
        }
        if let Some(v) = self.count {
            c += &format!(" --count {v}");
        }
        if let Some(k) = self.sampler {
            if k != SamplerKind::Ddim {
                c += &format!(" --sampler {}", sampler_word(k));
            }
        }
        if self.clip == Some(false) {
            c += " --no-clip";
        }
        if let Some(class) = &self.class {
            if class.contains(|ch: char| ch.is_whitespace() || "'\"/$&;|".contains(ch)) {
                c += &format!(" --class '{}'", class.replace('\'', "'\\''"));
            } else {
                c += &format!(" --class {class}");
            }
        }
        if let Some(w) = self.guidance {
            c += &format!(" --guidance {w}");
        }
        // The app computes in what `fewstep app --precision` asked for: the command repeats it.
        if crate::gpu::asked_precision() == Some(crate::gpu::Precision::Mixed) {
            c += " --precision mixed";
        }
        c + " --out sample.png"
    }
}

fn sampler_word(k: SamplerKind) -> &'static str {
    match k {
        SamplerKind::Ddim => "ddim",
        SamplerKind::Ancestral => "ancestral",
    }
}

/// One key or value of a query string: `+` is a space, `%XX` a byte of UTF-8.
fn decode_query_part(s: &str) -> Result<String, String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("in the address, `{s}` is not valid percent-encoded UTF-8"))
}
