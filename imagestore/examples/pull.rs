//! Pulls an image into a store at a given root and prints what it did; used by
//! `benches/pull.sh` until the `berth` CLI exists.
//!
//! ```text
//! cargo run --release -p berth-imagestore --example pull -- ROOT REFERENCE [PLATFORM]
//! ```

use berth_imagestore::{PullOptions, Store, StoreOptions};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, reference, rest @ ..] = args.as_slice() else {
        eprintln!("usage: pull ROOT REFERENCE [PLATFORM]");
        std::process::exit(2);
    };
    let mut opts = PullOptions::default();
    if let Some(p) = rest.first() {
        match p.parse() {
            Ok(p) => opts.platform = p,
            Err(e) => {
                eprintln!("pull: {e}");
                std::process::exit(2);
            }
        }
    }
    let registry = match berth_imagestore::RegistryConfig::load_default() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pull: {e}");
            std::process::exit(1);
        }
    };
    let result = async {
        let store = Store::open_with(root, StoreOptions { registry }).await?;
        store.pull_with_report(reference, &opts).await
    }
    .await;
    match result {
        Ok((img, r)) => println!(
            "{} {} layers downloaded {} unpacked {} bytes {} in {:.1} ms",
            img.name,
            img.manifest,
            r.layers_downloaded,
            r.layers_unpacked,
            r.bytes_downloaded,
            r.elapsed.as_secs_f64() * 1000.0
        ),
        Err(e) => {
            eprintln!("pull: {e}");
            std::process::exit(1);
        }
    }
}
