//! Embeds uap-core's `regexes.yaml` from the `ua-parser` package itself, so
//! bumping the crate updates the rules and no copy lives in this repository.
//! The YAML is converted to JSON here: the binary then needs no YAML parser.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    embed_tracker();
    println!("cargo:rerun-if-changed=Cargo.lock");
    let uap = find_uap_core().expect(
        "could not locate the ua-parser package's uap-core directory; run `cargo fetch` first",
    );
    let yaml = std::fs::read_to_string(uap.join("regexes.yaml")).expect("reading regexes.yaml");
    let value: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parsing regexes.yaml");
    let json = serde_json::to_string(&value).expect("converting regexes.yaml to JSON");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("uap_regexes.json");
    std::fs::write(out, json).expect("writing uap_regexes.json");
    // Tests read uap-core's own test cases from the same package.
    println!("cargo:rustc-env=TALLY_UAP_CORE_DIR={}", uap.display());
}

/// The tracker as served: full-line comments and indentation removed, so the
/// source can explain itself without costing visitors bytes.
fn embed_tracker() {
    println!("cargo:rerun-if-changed=static/script.js");
    let source = std::fs::read_to_string("static/script.js").expect("reading static/script.js");
    let served: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("script.js");
    std::fs::write(out, served.join("\n") + "\n").expect("writing script.js");
}

fn find_uap_core() -> Option<PathBuf> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(Path::new(&manifest_dir).join("Cargo.toml"))
        .other_options(vec!["--offline".to_string()])
        .exec();
    if let Ok(metadata) = metadata
        && let Some(pkg) = metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == "ua-parser")
    {
        let dir = pkg.manifest_path.parent()?.join("uap-core");
        if dir.join("regexes.yaml").is_file() {
            return Some(dir.into_std_path_buf());
        }
    }
    // Fallback when `cargo metadata` cannot resolve offline (e.g. packages of
    // other platforms were never downloaded): look in Cargo's source cache.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ua-parser-0."))
                && p.join("uap-core/regexes.yaml").is_file()
        })
        .collect();
    found.sort();
    found.pop().map(|p| p.join("uap-core"))
}
