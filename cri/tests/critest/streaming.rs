//! critest's Streaming specs, with the SPDY client (critest's default; its WebSocket flags are
//! off by default).

use super::*;
use crate::framework::*;
use crate::test_images::*;
use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn specs() {
    let (_bridge, d) = critest_daemon("critest-stream", 24);
    let c = Cri::new(&d).await;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streaming-client");
    let spdy = tokio::task::spawn_blocking(move || build_spdy_client(&src))
        .await
        .unwrap();
    let mut suite = Suite::new();
    let s = "Streaming runtime should support streaming interfaces";
    suite
        .spec(
            &format!(
                "{s} runtime should support exec with tty=false and stdin=false [Conformance]"
            ),
            Box::pin(stream_exec(c.clone(), spdy.clone(), false)),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support exec with tty=true and stdin=true [Conformance]"),
            Box::pin(stream_exec(c.clone(), spdy.clone(), true)),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support attach [Conformance]"),
            Box::pin(stream_attach(c.clone(), spdy.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support portforward [Conformance]"),
            Box::pin(stream_port_forward(
                c.clone(),
                spdy.clone(),
                false,
                d.dir.clone(),
            )),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support portforward in host network"),
            Box::pin(stream_port_forward(
                c.clone(),
                spdy.clone(),
                true,
                d.dir.clone(),
            )),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

/// critest's parseURL: the URL must name a host.
fn check_url(url: &str) -> R {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(format!("URL {url:?}: no http(s) scheme"))?;
    check!(
        !rest.starts_with('/') && !rest.is_empty(),
        "URL {url:?}: no host"
    );
    Ok(())
}

async fn stream_exec(mut c: Cri, spdy: PathBuf, tty: bool) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-exec-test"),
        )
        .await?;
    c.start(&id).await?;
    let url =
        c.rt.exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "-n".into(), "hello".into()],
            tty,
            stdin: tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .ctx("Exec")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || -> Result<Done, String> {
        let mut args = vec!["exec".to_string()];
        if tty {
            args.extend(["-tty".into(), "-stdin".into(), "-stderr=false".into()]);
        }
        args.push(url);
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args(&args);
        let mut r = Running::start(cmd);
        // critest keeps stdin open while the command runs: the session ends when the process
        // does, not when stdin does.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while r.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the exec session did not end with its process (stdin open): stdout {:?}",
                    Running::text(&r.out)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r.finish())
    })
    .await
    .unwrap()?;
    check!(done.code == 0, "exec: {done:?}");
    if tty {
        check!(done.stdout.contains("hello"), "stdout {:?}", done.stdout);
    } else {
        check!(done.stdout == "hello", "stdout {:?}", done.stdout);
    }
    check!(done.stderr.is_empty(), "stderr {:?}", done.stderr);
    c.cleanup_pod(&pod).await
}

async fn stream_attach(mut c: Cri, spdy: PathBuf) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let mut ctr = Cri::container("container-for-attach-test", &busybox(), &["/bin/sh"]);
    ctr.stdin = true;
    ctr.stdin_once = true;
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let url =
        c.rt.attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .ctx("Attach")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || -> Result<Done, String> {
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args(["attach", "-stdin", &url]);
        let mut r = Running::start(cmd);
        // No output without input (critest watches for 10 s; 2 here).
        std::thread::sleep(Duration::from_secs(2));
        let before = Running::text(&r.out);
        check!(before.is_empty(), "output before any input: {before:?}");
        r.write(b"echo -n hello\n");
        r.wait_for(false, "hello");
        std::thread::sleep(Duration::from_secs(3));
        let after = Running::text(&r.out);
        check!(after == "hello", "stdout {after:?}, want exactly \"hello\"");
        // Closing stdin closes the container's (stdin_once): sh ends, and so does the attach.
        Ok(r.finish())
    })
    .await
    .unwrap()?;
    check!(done.code == 0, "attach: {done:?}");
    check!(done.stderr.is_empty(), "stderr {:?}", done.stderr);
    c.cleanup_pod(&pod).await
}

async fn stream_port_forward(mut c: Cri, spdy: PathBuf, host_net: bool, dir: PathBuf) -> R {
    let mut cfg = Cri::pod_config("create-PodSandbox-with-port-mapping");
    // critest's host-network nginx listens on 12003; here on a free port, by a site file.
    let port = if host_net { free_port() } else { 80 };
    cfg.port_mappings = vec![PortMapping {
        container_port: port as i32,
        ..Default::default()
    }];
    if host_net {
        cfg.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: mode(NamespaceMode::Node),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let mut web = Cri::container("container-for-portforward-test", &nginx(), &[]);
    web.command.clear();
    if host_net {
        let site = file_with(
            &dir,
            &format!("site-{port}"),
            &format!("server {{ listen 127.0.0.1:{port} default_server; root /var/www/html; index index.html index.nginx-debian.html; }}\n"),
        );
        web.mounts = vec![Mount {
            host_path: site.display().to_string(),
            container_path: "/etc/nginx/sites-available/default".into(),
            readonly: true,
            ..Default::default()
        }];
    }
    let id = c.create_container(&pod, &cfg, web).await?;
    c.start(&id).await?;
    if host_net {
        check_main_page(format!("http://127.0.0.1:{port}")).await?;
    } else {
        let ip = c.pod_status(&pod).await?.network.ok_or("no network")?.ip;
        check_main_page(format!("http://{ip}:80")).await?;
    }
    let url =
        c.rt.port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![],
        })
        .await
        .ctx("PortForward")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args([
            "portforward",
            "-port",
            &port.to_string(),
            "-send",
            "GET / HTTP/1.0\r\n\r\n",
            &url,
        ]);
        Running::start(cmd).finish()
    })
    .await
    .unwrap();
    check!(
        done.code == 0 && done.stdout.starts_with("HTTP/1.1 200"),
        "GET / through the forward: {done:?}"
    );
    c.cleanup_pod(&pod).await
}
