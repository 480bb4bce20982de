//! Writes pgec2's CRDs to `crds/` (or prints them with `--stdout`).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [--stdout | --out-dir DIR]

Writes crds/postgreshost.yaml and crds/backuppolicy.yaml from the pgec2-api types.
  --stdout        print both CRDs as one YAML stream instead of writing files
  --out-dir DIR   write into DIR (default: the repository's crds/ directory)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds"));
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => write_files(default_dir),
        ["--out-dir", dir] => write_files(PathBuf::from(dir)),
        ["--stdout"] => print_all(),
        ["--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown arguments {args:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_files(dir: PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("failed to resolve {}: {e}", dir.display()))?;
    for file in pgec2_api::crd::crd_files() {
        let yaml = file.to_yaml().map_err(|e| format!("failed to render {}: {e}", file.file_name))?;
        let path = dir.join(file.file_name);
        std::fs::write(&path, yaml).map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_all() -> Result<(), String> {
    for file in pgec2_api::crd::crd_files() {
        let yaml = file.to_yaml().map_err(|e| format!("failed to render {}: {e}", file.file_name))?;
        print!("---\n{yaml}");
    }
    Ok(())
}
