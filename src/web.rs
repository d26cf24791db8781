//! Browser entry points (wasm32 only). The kernel self-test page (web/selftest.html) calls
//! `run_selftest` and publishes the JSON report for the headless-Chromium harness in `.ci/`.

use wasm_bindgen::prelude::*;

use crate::gpu::{Gpu, GpuOptions};

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Creates the WebGPU device and runs `selftest::run`; resolves to the report as JSON, or rejects
/// with a message that says what is missing (e.g. no WebGPU in this browser).
#[wasm_bindgen]
pub async fn run_selftest(seed: f64) -> Result<String, JsValue> {
    let gpu = Gpu::new(GpuOptions::default())
        .await
        .map_err(|e| JsValue::from_str(&e.to_string()))?;
    let report = crate::selftest::run(&gpu, seed as u64).await;
    serde_json::to_string(&report).map_err(|e| JsValue::from_str(&e.to_string()))
}
