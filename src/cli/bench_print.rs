//! How `fewstep bench` prints a result: one JSON object per line with --json, else a line
//! of text.

pub(super) fn emit(json: bool, v: serde_json::Value, text: String) {
    if json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}
