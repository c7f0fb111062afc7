//! critest's Image Manager, Image Consistency and Image Identifier Consistency specs.

use super::*;
use crate::framework::*;
use crate::test_images::*;
use berth_tests_support::cri::*;
use k8s_cri::v1::*;
use std::path::Path;
use std::time::Duration;

pub async fn specs() {
    let (_bridge, d) = critest_daemon("critest-img", 25);
    let c = Cri::new(&d).await;
    let images = Images::new(&d.dir, "img");
    let made = make_test_images(&images, &d.dir);
    let mut suite = Suite::new();
    let im = "Image Manager";
    suite
        .spec(
            &format!("{im} public image with tag should be pulled and removed [Conformance]"),
            Box::pin(image_with_tag(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image should timeout if requested [Conformance]"),
            Box::pin(image_pull_timeout(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image without tag should be pulled and removed [Conformance]"),
            Box::pin(image_without_tag(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image with digest should be pulled and removed [Conformance]"),
            Box::pin(image_with_digest(c.clone(), &images, made.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{im} image status should support all kinds of references [Conformance]"),
            Box::pin(image_all_references(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} image status get image fields should not have Uid|Username empty [Conformance]"),
            Box::pin(image_users(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} listImage should get exactly 3 image in the result list [Conformance]"),
            Box::pin(image_list_three(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} listImage should get exactly 3 repoTags in the result image, and removing image by one tag should remove all tags [Conformance]"),
            Box::pin(image_three_tags(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} removing image from one registry should remove all tags from other registries [Conformance]"),
            Box::pin(image_two_registries(c.clone(), &images)),
        )
        .await;
    let ic = "Image Consistency";
    suite
        .spec(
            &format!("{ic} should not list or get image status immediately after removal, should list and get image status immediately after pulling [Conformance]"),
            Box::pin(image_consistency(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{ic} should not fail on simultaneous RemoveImage calls [Conformance]"),
            Box::pin(image_simultaneous_removes(c.clone(), &images)),
        )
        .await;
    let iic = "Image Identifier Consistency";
    suite
        .spec(
            &format!("{iic} should return the same image identifier across all APIs [Conformance]"),
            Box::pin(image_id_consistency(c.clone(), &images, false)),
        )
        .await;
    suite
        .spec(
            &format!("{iic} should return the same image identifier when pulled from different registries [Conformance]"),
            Box::pin(image_id_consistency(c.clone(), &images, true)),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

/// cri-tools' test images (images/image-test, images/image-user), each a busybox with a file of
/// its own; the digest of test-image-digest.
fn make_test_images(images: &Images, dir: &Path) -> Result<String, String> {
    let files = dir.join("image-files");
    std::fs::create_dir_all(&files).unwrap();
    let mark = |name: &str| file_with(&files, name, name);
    let one = |repo: &str, tags: &[&str], user: Option<&str>, file: &str| {
        let f = mark(file);
        images.make(repo, tags, user, None, &[(&f, &format!("/{file}"))])
    };
    one("test-image-tag", &["test"], None, "test-image-tag-test")?;
    one("test-image-tag", &["all"], None, "test-image-tag-all")?;
    one("test-image-latest", &["latest"], None, "test-image-latest")?;
    let digest = one("test-image-digest", &["pushed"], None, "test-image-digest")?;
    for n in ["1", "2", "3"] {
        one(
            &format!("test-image-{n}"),
            &["latest"],
            None,
            &format!("test-image-{n}"),
        )?;
    }
    one("test-image-tags", &["1", "2", "3"], None, "test-image-tags")?;
    for (repo, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        one(repo, &["latest"], Some(user), repo)?;
    }
    one("same", &["3.10.1"], None, "same")?;
    Ok(digest)
}

/// critest's testPullPublicImage: removed, pulled, its status checked, removed again and gone.
async fn pull_check_remove(c: &mut Cri, name: &str, check: impl FnOnce(&Image) -> R) -> R {
    c.remove_image(name).await?;
    c.pull(name, Some(PodSandboxConfig::default())).await?;
    let s = c
        .image_status(name)
        .await?
        .ok_or("no image after the pull")?;
    check(&s)?;
    c.remove_image(name).await?;
    check!(
        c.image_status(name).await?.is_none(),
        "{name}: still there after RemoveImage"
    );
    Ok(())
}

async fn image_with_tag(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    let n = name.clone();
    pull_check_remove(&mut c, &name, move |s| {
        check!(
            s.repo_tags == vec![n.clone()],
            "repo_tags {:?}",
            s.repo_tags
        );
        Ok(())
    })
    .await
}

async fn image_pull_timeout(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    let mut req = tonic::Request::new(PullImageRequest {
        image: spec(&name),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1));
    // critest's Go client ends the call itself at its deadline (DeadlineExceeded); tonic's
    // leaves that to the server, whose tonic answers Cancelled ("Timeout expired").
    match c.img.pull_image(req).await {
        Ok(_) => return Err("a pull with 1 ms succeeded".into()),
        Err(e) => check!(
            e.code() == tonic::Code::DeadlineExceeded || e.code() == tonic::Code::Cancelled,
            "{:?}: {}",
            e.code(),
            e.message()
        ),
    }
    // And the image is pulled as usual afterwards.
    c.pull(&name, None).await?;
    c.remove_image(&name).await
}

async fn image_without_tag(mut c: Cri, images: &Images) -> R {
    let name = images.name("test-image-latest");
    c.remove_image(&name).await?;
    c.pull(&format!("{name}:latest"), None).await?;
    let s = c
        .image_status(&name)
        .await?
        .ok_or("no status by the untagged name")?;
    check!(
        s.repo_tags == vec![format!("{name}:latest")],
        "repo_tags {:?}",
        s.repo_tags
    );
    c.remove_image(&name).await?;
    check!(c.image_status(&name).await?.is_none(), "still there");
    Ok(())
}

async fn image_with_digest(mut c: Cri, images: &Images, digest: Result<String, String>) -> R {
    let name = format!("{}@{}", images.name("test-image-digest"), digest?);
    let n = name.clone();
    pull_check_remove(&mut c, &name, move |s| {
        check!(s.repo_tags.is_empty(), "repo_tags {:?}", s.repo_tags);
        check!(
            s.repo_digests == vec![n.clone()],
            "repo_digests {:?}",
            s.repo_digests
        );
        Ok(())
    })
    .await
}

async fn image_all_references(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:all", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    let s = c.image_status(&name).await?.ok_or("no status")?;
    let mut refs = vec![s.id.clone()];
    refs.extend(s.repo_tags.iter().cloned());
    refs.extend(s.repo_digests.iter().cloned());
    for r in refs {
        let other = c.image_status(&r).await?;
        check!(
            other.as_ref() == Some(&s),
            "ImageStatus({r}) = {other:?}, not {s:?}"
        );
    }
    c.remove_image(&name).await?;
    check!(c.image_status(&name).await?.is_none(), "still there");
    Ok(())
}

async fn image_users(mut c: Cri, images: &Images) -> R {
    for (repo, uid, username) in [
        ("test-image-user-uid", 1002, ""),
        ("test-image-user-username", 0, "www-data"),
        ("test-image-user-uid-group", 1003, ""),
        ("test-image-user-username-group", 0, "www-data"),
    ] {
        let name = images.name(repo);
        c.pull(&format!("{name}:latest"), None).await?;
        let s = c.image_status(&name).await?.unwrap_or_default();
        let got = s.uid.map(|u| u.value).unwrap_or(0);
        check!(
            got == uid && s.username == username,
            "{repo}: uid {:?} username {:?}",
            s.uid,
            s.username
        );
        c.remove_image(&name).await?;
    }
    Ok(())
}

async fn list_images(c: &mut Cri) -> Result<Vec<Image>, String> {
    Ok(c.img
        .list_images(ListImagesRequest { filter: None })
        .await
        .ctx("ListImages")?
        .images)
}

async fn image_list_three(mut c: Cri, images: &Images) -> R {
    let names: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|n| format!("{}:latest", images.name(&format!("test-image-{n}"))))
        .collect();
    for n in &names {
        c.remove_image(n).await?;
    }
    let mut ids = Vec::new();
    for n in &names {
        ids.push(c.pull(n, None).await?);
    }
    let listed = list_images(&mut c).await?;
    for (id, n) in ids.iter().zip(&names) {
        let img = listed
            .iter()
            .find(|i| &i.id == id)
            .ok_or(format!("no image {id} (the pull's image_ref) listed"))?;
        check!(
            img.repo_tags == vec![n.clone()],
            "{n}: repo_tags {:?}",
            img.repo_tags
        );
    }
    for n in &names {
        c.remove_image(n).await?;
    }
    Ok(())
}

async fn image_three_tags(mut c: Cri, images: &Images) -> R {
    let names: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|n| format!("{}:{n}", images.name("test-image-tags")))
        .collect();
    for n in &names {
        c.remove_image(n).await?;
    }
    let mut ids = Vec::new();
    for n in &names {
        ids.push(c.pull(n, None).await?);
    }
    ids.sort();
    ids.dedup();
    check!(ids.len() == 1, "three tags of one image gave ids {ids:?}");
    let listed = list_images(&mut c).await?;
    let img = listed
        .iter()
        .find(|i| i.id == ids[0])
        .ok_or("the image is not listed")?;
    let mut tags = img.repo_tags.clone();
    tags.sort();
    check!(tags == names, "repo_tags {tags:?}");
    // removing image by one tag should remove all tags
    c.remove_image(&names[0]).await?;
    for r in names.iter().chain([&ids[0]]) {
        check!(c.image_status(r).await?.is_none(), "{r}: still there");
    }
    Ok(())
}

/// The same image under two registry names: 127.0.0.1:5000 and localhost:5000 (critest uses
/// registry.k8s.io and k8s.gcr.io).
fn two_registries(images: &Images) -> [String; 2] {
    let a = format!("{}:3.10.1", images.name("same"));
    let b = a.replacen("127.0.0.1:", "localhost:", 1);
    [a, b]
}

async fn image_two_registries(mut c: Cri, images: &Images) -> R {
    let [a, b] = two_registries(images);
    check!(a != b, "the registry is not 127.0.0.1: {a}");
    for n in [&a, &b] {
        c.remove_image(n).await?;
    }
    for n in [&a, &b] {
        c.pull(n, None).await?;
    }
    let listed = list_images(&mut c).await?;
    let img = listed
        .iter()
        .find(|i| i.repo_tags.contains(&a))
        .ok_or("not listed")?;
    check!(
        img.repo_tags.len() == 2 && img.repo_tags.contains(&b),
        "repo_tags {:?}",
        img.repo_tags
    );
    let id = img.id.clone();
    c.remove_image(&a).await?;
    for r in [&a, &b, &id] {
        check!(c.image_status(r).await?.is_none(), "{r}: still there");
    }
    Ok(())
}

async fn image_consistency(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    c.remove_image(&name).await?;
    let listed = list_images(&mut c).await?;
    check!(
        !listed.iter().any(|i| i.repo_tags.contains(&name)),
        "listed right after removal"
    );
    check!(
        c.image_status(&name).await?.is_none(),
        "status right after removal"
    );
    c.pull(&name, None).await?;
    let listed = list_images(&mut c).await?;
    check!(
        listed.iter().any(|i| i.repo_tags.contains(&name)),
        "not listed right after the pull"
    );
    check!(
        c.image_status(&name).await?.is_some(),
        "no status right after the pull"
    );
    c.remove_image(&name).await
}

async fn image_simultaneous_removes(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    let id = c.image_status(&name).await?.ok_or("no status")?.id;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (mut c, id) = (c.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            c.img
                .remove_image(RemoveImageRequest { image: spec(&id) })
                .await
                .ctx("RemoveImage")?;
            check!(
                c.image_status(&id).await?.is_none(),
                "status after RemoveImage"
            );
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap()?;
    }
    check!(c.image_status(&id).await?.is_none(), "still there");
    Ok(())
}

async fn image_id_consistency(mut c: Cri, images: &Images, two: bool) -> R {
    let (name, refs) = if two {
        let [a, b] = two_registries(images);
        let r1 = c.pull(&a, None).await?;
        let r2 = c.pull(&b, None).await?;
        check!(r1 == r2, "image refs {r1} and {r2} from two registries");
        for n in [&a, &b] {
            let id = c.image_status(n).await?.ok_or("no status")?.id;
            check!(id == r1, "{n}: id {id}, image ref {r1}");
        }
        (b, r1)
    } else {
        let name = format!("{}:test", images.name("test-image-tag"));
        let r = c.pull(&name, None).await?;
        let id = c.image_status(&name).await?.ok_or("no status")?.id;
        check!(id == r, "Image.id {id} != image ref {r}");
        (name, r)
    };
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let ctr = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: format!("id-consistency-{}", uuid()),
            attempt: 2,
        }),
        image: Some(ImageSpec {
            image: refs.clone(),
            user_specified_image: name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let s = c.status(&id).await?;
    check!(
        s.image_id == refs,
        "ContainerStatus.image_id {} != {refs}",
        s.image_id
    );
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.len() == 1, "{} listed", listed.len());
    check!(
        listed[0].image_id == refs,
        "Container.image_id {} != {refs}",
        listed[0].image_id
    );
    c.remove(&id).await?;
    c.cleanup_pod(&pod).await?;
    c.remove_image(&name).await
}
