//! berthd's CRI v1 API driven the way a kubelet drives it, over the unix socket: Version and
//! Status, and the ImageService against the fixture registry. (Pods and containers through the
//! CRI are not implemented yet; those RPCs must answer Unimplemented.)

mod common;

use common::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

async fn channel(d: &Daemon) -> Channel {
    let path = d.sock();
    tonic::transport::Endpoint::try_from("http://berthd")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A daemon whose CRI looks for CNI configs in `<dir>/net.d` (empty at first).
fn daemon(name: &str, n: u8) -> Daemon {
    let mut d = Daemon::with_containers(name, n);
    let conf = d.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\n[cri]\ncni_conf_dir = \"{}\"\n",
        d.dir.join("net.d").display()
    ));
    std::fs::write(&conf, text).unwrap();
    std::fs::create_dir_all(d.dir.join("net.d")).unwrap();
    d.kill9();
    d.start();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_status_as_the_kubelet_reads_them() {
    let d = daemon("cri-status", 8);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let v = rt
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");

    let cond = |s: &StatusResponse, t: &str| {
        s.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.r#type == t)
            .cloned()
            .unwrap()
    };
    let s = rt
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cond(&s, "RuntimeReady").status);
    let net = cond(&s, "NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("net.d"), "{}", net.message);

    // A network config appears: the network is ready, without a restart.
    std::fs::write(
        d.dir.join("net.d/10-berth.conflist"),
        r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let s = rt
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cond(&s, "NetworkReady").status);

    // What is not implemented says so, by name.
    let e = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("ListPodSandbox"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_through_the_cri() {
    let d = daemon("cri-images", 9);
    let mut im = ImageServiceClient::new(channel(&d).await);
    let busybox = format!("{}/library/busybox:latest", registry());

    // Before the pull: ImageStatus answers with no image (not an error), as the kubelet expects.
    let st = im
        .image_status(ImageStatusRequest {
            image: spec(&busybox),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());

    let pulled = im
        .pull_image(PullImageRequest {
            image: spec(&busybox),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

    // The image by name, by id, and by repo digest; ListImages with and without a filter.
    let st = im
        .image_status(ImageStatusRequest {
            image: spec(&busybox),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let img = st.image.unwrap();
    assert_eq!(img.id, pulled.image_ref);
    assert_eq!(img.repo_tags, vec![busybox.clone()]);
    assert_eq!(img.repo_digests.len(), 1);
    assert!(img.size > 0);
    assert!(st.info["info"].contains("chainID"), "{:?}", st.info);
    for by in [img.id.clone(), img.repo_digests[0].clone()] {
        let st = im
            .image_status(ImageStatusRequest {
                image: spec(&by),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.image.map(|i| i.id), Some(img.id.clone()), "by {by}");
    }
    let all = im
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.images.len(), 1);
    let fs = im
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

    // Bad requests get the codes the kubelet expects, and change nothing.
    let e = im
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/library/nosuch:latest", registry())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let e = im
        .pull_image(PullImageRequest {
            image: spec(""),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // RemoveImage by id, then again: both succeed; the image is gone.
    for _ in 0..2 {
        im.remove_image(RemoveImageRequest {
            image: spec(&img.id),
        })
        .await
        .unwrap();
    }
    let all = im
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.images.is_empty(), "{all:?}");
}
