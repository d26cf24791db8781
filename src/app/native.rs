//! The desktop window (`fewstep` with no subcommand, or `fewstep app`).

use eframe::egui;

use super::{wgpu_options, FewstepApp, StartOptions};

pub fn run(start: StartOptions) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("fewstep")
            .with_inner_size([1100.0, 760.0]),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: wgpu_options(),
        // A screenshot run is reproducible: the window size does not come from earlier launches.
        persist_window: start.screenshot.is_none(),
        ..Default::default()
    };
    eframe::run_native(
        "fewstep",
        options,
        Box::new(move |cc| Ok(Box::new(FewstepApp::new(cc, start)))),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "could not open the window: {e}\n  The app needs a display (X11 or Wayland) and a GPU \
             driver wgpu can use (on Linux without a GPU: apt-get install mesa-vulkan-drivers). \
             Without a display, use the command line: fewstep sample --help"
        )
    })
}
