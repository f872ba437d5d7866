//! What a refused request must leave: the same templates and layers, an empty `tmp/` and,
//! once the background removal is done, an empty trash; and what its refusal must say.

use super::*;

/// The names of the templates, sorted.
pub fn template_names(d: &TestDaemon) -> Vec<String> {
    let all = d.json(&["template", "list", "--json"]);
    let mut names: Vec<String> = all
        .as_array()
        .expect("template list --json is an array")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// What the catalogue and the state directory hold, to compare after a refused request.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    /// Template names, sorted.
    pub templates: Vec<String>,
    /// Layer directories.
    pub layers: HashSet<String>,
}

/// The templates and layer directories now.
pub fn catalogue(d: &TestDaemon) -> Catalogue {
    Catalogue {
        templates: template_names(d),
        layers: layer_dirs(d),
    }
}

/// Fails unless a refused import left nothing: same templates, same layer directories, an
/// empty `<state>/tmp`, and (eventually) an empty trash.
pub fn assert_nothing_created(d: &TestDaemon, before: &Catalogue, what: &str) {
    assert_eq!(
        template_names(d),
        before.templates,
        "{what}: the template list changed"
    );
    assert_eq!(
        layer_dirs(d),
        before.layers,
        "{what}: layer directories changed"
    );
    assert!(
        d.state_entries("tmp").is_empty(),
        "{what}: <state>/tmp is not empty: {:?}",
        d.state_entries("tmp")
    );
    let drained = poll_until(Duration::from_secs(30), || {
        d.state_entries("trash").is_empty()
    });
    assert!(
        drained,
        "{what}: the trash is not emptied: {:?}",
        d.state_entries("trash")
    );
}

/// Fails unless `out` is a refusal: exit code 1, an `error:` on stderr that names every one
/// of `mentions`, and no claim of success on stdout.
pub fn assert_refused(out: &Output, what: &str, mentions: &[&str]) {
    assert_eq!(out.code, 1, "{what}: expected exit code 1: {out}");
    assert!(
        out.stderr.starts_with("error: "),
        "{what}: no error message: {out}"
    );
    for m in mentions {
        assert!(
            out.stderr.contains(m),
            "{what}: the error does not mention `{m}`: {out}"
        );
    }
    assert!(
        !out.stdout.contains("imported template"),
        "{what}: stdout claims success: {out}"
    );
}
