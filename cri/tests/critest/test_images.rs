//! Images critest pulls from gcr.io/k8s-staging-cri-tools, made here from the fixture busybox
//! the way cri-tools' images/ Dockerfiles make them (a USER, a file of their own), with umoci,
//! and pushed to the fixture registry with skopeo.

use super::*;
use std::path::{Path, PathBuf};

pub struct Images {
    /// An OCI layout holding the fixture busybox as `base`, and the variants made from it.
    pub layout: PathBuf,
    /// `<registry>/<repo prefix>`: where the images are pushed.
    pub prefix: String,
}

pub fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    check!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Images {
    /// `dir` is the test's; `repo` names the test (so that tests side by side push apart).
    pub fn new(dir: &Path, repo: &str) -> Images {
        let layout = dir.join("images-layout");
        let _ = std::fs::remove_dir_all(&layout);
        let fixtures =
            std::env::var("BERTH_FIXTURES").unwrap_or("/var/cache/berth-fixtures".into());
        run(std::process::Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{fixtures}/oci/busybox:latest"))
            .arg(format!("oci:{}:base", layout.display())))
        .unwrap();
        Images {
            layout,
            prefix: format!("{}/critest-{repo}", registry()),
        }
    }

    pub fn at(&self, tag: &str) -> String {
        format!("{}:{tag}", self.layout.display())
    }

    /// A variant of busybox: `user` as its USER (if any), `cmd` as its Cmd (if any), and
    /// `files` (host path, image path) added in a layer; pushed as `<prefix>/<name>` under
    /// each of `tags`. The digest of its manifest.
    pub fn make(
        &self,
        name: &str,
        tags: &[&str],
        user: Option<&str>,
        cmd: Option<&str>,
        files: &[(&Path, &str)],
    ) -> Result<String, String> {
        let t = format!("{}-{}", name.replace('/', "-"), tags[0]);
        let mut config = std::process::Command::new("umoci");
        config
            .args([
                "config",
                "--no-history",
                "--image",
                &self.at("base"),
                "--tag",
                &t,
            ])
            .args(["--created", "2023-11-14T22:13:20Z"]);
        if let Some(u) = user {
            config.args(["--config.user", u]);
        }
        if let Some(c) = cmd {
            config.args(["--config.cmd", c]);
        }
        run(&mut config)?;
        if !files.is_empty() {
            // One layer of the files, as root's with their modes, made with GNU tar (umoci
            // 0.4.7's `insert` writes a tar without its end, which berth rightly refuses).
            let stage = self.layout.with_extension(format!("{t}.stage"));
            let _ = std::fs::remove_dir_all(&stage);
            for (src, dst) in files {
                let to = stage.join(dst.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                run(std::process::Command::new("cp").arg("-p").arg(src).arg(&to))?;
            }
            let tar = stage.with_extension("tar");
            run(std::process::Command::new("tar")
                .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
                .arg(&stage)
                .arg("-cf")
                .arg(&tar)
                .arg("."))?;
            run(std::process::Command::new("umoci")
                .args(["raw", "add-layer", "--no-history", "--image", &self.at(&t)])
                .arg(&tar))?;
        }
        let digest_file = self.layout.with_extension(format!("{t}.digest"));
        for tag in tags {
            run(std::process::Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
                .arg(&digest_file)
                .arg(format!("oci:{}", self.at(&t)))
                .arg(format!("docker://{}/{name}:{tag}", self.prefix)))?;
        }
        Ok(std::fs::read_to_string(&digest_file)
            .map_err(|e| e.to_string())?
            .trim()
            .to_string())
    }

    pub fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// A file of `content` in `dir`, its path.
pub fn file_with(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// The nonewprivs image of Kubernetes' e2e tests: a setuid-root program that prints its
/// effective uid, as its Cmd (compiled here, static).
pub fn nnp_image(images: &Images, dir: &Path) -> Result<String, String> {
    let src = file_with(
        dir,
        "nnp.c",
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"Effective uid: %d\\n\", (int)geteuid()); return 0; }\n",
    );
    let bin = dir.join("nnp");
    run(std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src))?;
    run(std::process::Command::new("chmod").arg("4755").arg(&bin))?;
    images.make(
        "nonewprivs",
        &["1.3"],
        None,
        Some("/usr/local/bin/nnp"),
        &[(&bin, "/usr/local/bin/nnp")],
    )?;
    Ok(format!("{}:1.3", images.name("nonewprivs")))
}
