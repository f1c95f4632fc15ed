//! The README's two set-up commands, `scripts/demo.sh` and `scripts/test.sh`, install what is
//! missing through `scripts/deps.sh`. These tests run them in its dry-run mode
//! (`PORTCULLIS_DEPS_DRY_RUN=1`: print what would be installed, then exit before building or
//! testing anything), against a fresh machine (`PORTCULLIS_DEPS_ROOT=/nonexistent`), a fake
//! root with chosen files, and this machine (`PORTCULLIS_DEPS_ROOT=/`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a dry run of `scripts/<script>` printed, after checking that it exited 0, said
/// nothing on stderr that looks like a failure, and left no build or cache folder behind
/// (it stopped before building).
fn dry_run(script: &str, root: &Path) -> String {
    let scratch = tempfile::tempdir().expect("tempdir");
    let cache = scratch.path().join("cache");
    let target = scratch.path().join("target");
    let path = repo().join("scripts").join(script);
    assert!(path.is_file(), "{} is missing", path.display());
    let o = Command::new("bash")
        .arg(&path)
        .env("PORTCULLIS_DEPS_ROOT", root)
        .env("PORTCULLIS_DEPS_DRY_RUN", "1")
        .env("PORTCULLIS_CACHE", &cache)
        .env("CARGO_TARGET_DIR", &target)
        // PG_BIN would stand in for PostgreSQL's packages.
        .env_remove("PG_BIN")
        .output()
        .expect("run bash (is it installed?)");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{script} with PORTCULLIS_DEPS_ROOT={}: stdout:\n{stdout}\nstderr:\n{stderr}",
        root.display()
    );
    // Nothing after the install step ran: no cache folder, no build folder.
    assert!(
        !cache.exists() && !target.exists(),
        "{script} went on past the install step in a dry run: stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("building") && !stderr.contains("== cargo"),
        "{script} went on past the install step: {stderr}"
    );
    stdout
}

/// The packages named on the script's one `would install:` line (none for `nothing to
/// install`); any other output fails the test.
fn would_install(stdout: &str) -> Vec<String> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stdout}");
    if lines[0] == "nothing to install" {
        return Vec::new();
    }
    let rest = lines[0]
        .strip_prefix("would install: ")
        .unwrap_or_else(|| panic!("expected `would install: …`, got:\n{stdout}"));
    rest.split_whitespace().map(str::to_string).collect()
}

#[test]
fn demo_sh_on_a_fresh_machine_installs_the_build_tools_and_postgres() {
    let out = dry_run("demo.sh", Path::new("/nonexistent"));
    let pkgs = would_install(&out);
    for needed in [
        "build-essential",
        "libclang-dev",
        "postgresql",
        "postgresql-client",
    ] {
        assert!(
            pkgs.iter().any(|p| p == needed),
            "demo.sh would not install {needed}: {pkgs:?}"
        );
    }
}

#[test]
fn test_sh_on_a_fresh_machine_installs_the_build_tools_and_postgres() {
    let out = dry_run("test.sh", Path::new("/nonexistent"));
    let pkgs = would_install(&out);
    for needed in [
        "build-essential",
        "libclang-dev",
        "postgresql",
        "postgresql-client",
        "postgresql-contrib",
    ] {
        assert!(
            pkgs.iter().any(|p| p == needed),
            "test.sh would not install {needed}: {pkgs:?}"
        );
    }
}

/// A fake root with exactly the files the checks look for: nothing is missing; without
/// libclang itself (only libclang-cpp, which LLVM packages also install and bindgen cannot
/// use) libclang-dev is, and nothing else.
#[test]
fn demo_sh_looks_for_each_file_under_the_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let touch = |rel: &str| {
        let p = root.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, b"").expect("touch");
    };
    touch("usr/bin/cc");
    touch("usr/bin/psql");
    touch("usr/lib/postgresql/16/bin/initdb");
    touch("usr/lib/llvm-16/lib/libclang-cpp.so.16");
    assert_eq!(
        would_install(&dry_run("demo.sh", root.path())),
        ["libclang-dev"]
    );
    touch("usr/lib/llvm-16/lib/libclang.so.1");
    assert_eq!(
        would_install(&dry_run("demo.sh", root.path())),
        Vec::<String>::new()
    );
}

/// This machine builds and tests portcullis, so it has everything: a dry run names nothing.
/// (A failure here names the missing packages: `scripts/test.sh` installs them.)
#[test]
fn on_this_machine_nothing_is_missing() {
    for script in ["demo.sh", "test.sh"] {
        let out = dry_run(script, Path::new("/"));
        assert_eq!(
            would_install(&out),
            Vec::<String>::new(),
            "{script}: run scripts/test.sh once to install them"
        );
    }
}
