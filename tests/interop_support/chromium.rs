//! Headless Chromium as a plain subprocess (its own `--headless` mode, no driver crate).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn find_chromium() -> Result<PathBuf, String> {
    if let Some(program) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(
        "chromium is not installed: the browser interop tests need Debian's `chromium` package \
         (`apt-get update && apt-get install -y --no-install-recommends chromium`, which .ci/run \
         does when it is missing), or CHROMIUM set to a Chromium/Chrome binary"
            .into(),
    )
}

/// A headless Chromium showing one URL, in a fresh profile. Dropping it kills its whole process
/// group (browser, zygote, renderers) and removes the profile.
pub struct Chromium {
    child: Child,
    dir: PathBuf,
}

impl Chromium {
    pub fn launch(url: &str) -> Result<Self, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let program = find_chromium()?;
        let dir = std::env::temp_dir().join(format!(
            "tower-gzip-chromium-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile")).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("chromium.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(&program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-proxy-server",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| {
            remove_dir(&dir);
            format!("cannot start {}: {e}", program.display())
        })?;
        Ok(Self { child, dir })
    }

    /// The end of Chromium's own output, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The launcher script and the browser share the process group started for them.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_dir(&self.dir);
    }
}

fn remove_dir(dir: &Path) {
    // Chromium's helpers may still be writing for a moment after the kill.
    for _ in 0..20 {
        if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
