//! Embeds xterm.js, the web page's terminal, from Debian's `node-xterm` package.
//!
//! Debian 12's browser bundle (`libjs-xterm`: /usr/share/javascript/xterm/xterm.js) is a
//! 288-byte stub that `require`s modules it does not ship, so the page cannot use it. The
//! package's CommonJS modules (`node-xterm`: /usr/share/nodejs/xterm/lib) are complete: this
//! script wraps each of them in a function and adds a dozen lines of `require` that resolve
//! relative paths between them, giving one script that defines `window.Terminal` (and the
//! `fit` add-on as `window.TerminalFit`). No JavaScript tool runs; the daemon embeds the
//! result with `include_str!`. `MAYFLY_XTERM_DIR` names another copy of the package's
//! directory (the one holding `package.json` and `lib/`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const DEFAULT_DIR: &str = "/usr/share/nodejs/xterm";

fn main() {
    println!("cargo:rerun-if-env-changed=MAYFLY_XTERM_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var_os("MAYFLY_XTERM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let lib = dir.join("lib");
    println!("cargo:rerun-if-changed={}", lib.display());
    let main = lib.join("public/Terminal.js");
    if !main.is_file() {
        panic!(
            "\n\nmayfly's web page embeds xterm.js from Debian's `node-xterm` package, but {} is \
             missing.\nInstall it (`apt-get install node-xterm`, or run scripts/install-deps), or \
             point MAYFLY_XTERM_DIR at a copy of the package's directory (holding lib/).\n\n",
            main.display()
        );
    }
    let mut modules = Vec::new();
    collect(&lib, &lib, &mut modules);
    modules.sort();
    let mut out = String::with_capacity(512 * 1024);
    out.push_str(
        "// xterm.js from Debian's node-xterm, its CommonJS modules wrapped by mayfly's build.rs.\n\
         (function () {\n\
         'use strict';\n\
         var defs = Object.create(null), cache = Object.create(null);\n\
         function resolve(from, rel) {\n\
           var parts = from.split('/'); parts.pop();\n\
           rel.split('/').forEach(function (p) {\n\
             if (p === '..') parts.pop(); else if (p !== '.' && p !== '') parts.push(p);\n\
           });\n\
           return parts.join('/').replace(/\\.js$/, '');\n\
         }\n\
         function load(id) {\n\
           if (cache[id]) return cache[id].exports;\n\
           var f = defs[id];\n\
           if (!f) throw new Error('xterm.js bundle: no module ' + id);\n\
           var module = { exports: {} };\n\
           cache[id] = module;\n\
           f(function (rel) { return load(resolve(id, rel)); }, module, module.exports);\n\
           return module.exports;\n\
         }\n",
    );
    for (id, path) in &modules {
        let source = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let _ = writeln!(
            out,
            "defs[{id:?}] = function (require, module, exports) {{\n{}\n}};",
            strip_source_map(&source)
        );
    }
    out.push_str(
        "window.Terminal = load('public/Terminal').Terminal;\n\
         window.TerminalFit = load('addons/fit/fit');\n\
         })();\n",
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    write(&out_dir.join("xterm.js"), out.as_bytes());
    let css = std::fs::read(lib.join("xterm.css"))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lib.join("xterm.css").display()));
    write(&out_dir.join("xterm.css"), &css);
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The modules under `dir`: (id relative to `lib` without `.js`, path). Tests and the broken
/// top-level stub (`xterm.js`) are left out.
fn collect(lib: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(lib, &path, out);
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".js") || name.ends_with(".test.js") {
            continue;
        }
        let Ok(rel) = path.strip_prefix(lib) else {
            continue;
        };
        let id = rel.to_string_lossy().trim_end_matches(".js").to_owned();
        if id == "xterm" {
            continue;
        }
        out.push((id, path));
    }
}

/// The source without its `//# sourceMappingURL=` line (the maps are not served).
fn strip_source_map(source: &str) -> String {
    source
        .lines()
        .filter(|l| !l.starts_with("//# sourceMappingURL="))
        .collect::<Vec<_>>()
        .join("\n")
}
