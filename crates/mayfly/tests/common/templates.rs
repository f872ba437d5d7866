//! Templates as the template tests read and write them: whether one exists, the layers and
//! packages of a version, the version an instance runs, trees to patch from.

use super::*;

/// Whether template `name` exists.
pub fn template_exists(d: &TestDaemon, name: &str) -> bool {
    let all = d.json(&["template", "list", "--json"]);
    all.as_array()
        .expect("template list --json is an array")
        .iter()
        .any(|t| t["name"] == name)
}

/// The top layer of a version.
pub fn top_layer(v: &Value) -> Value {
    v["layers"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or_else(|| panic!("a version without layers: {v}"))
}

/// The template version instance `name` runs now.
pub fn running_version(d: &TestDaemon, name: &str) -> Option<u64> {
    d.info(name)["running_version"].as_u64()
}

/// Strings of a JSON array.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `files` (relative path → content) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    std::fs::create_dir_all(dir).expect("mkdir");
}
