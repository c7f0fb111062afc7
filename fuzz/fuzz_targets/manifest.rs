//! Manifest, index, config, platform and reference parsing must never panic, and whatever
//! parses must survive a serialize/parse round trip.
#![no_main]

use berth_imagestore::manifest::{parse_document, Document, ImageConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ct in [None, Some("application/json"), Some("application/vnd.oci.image.index.v1+json")] {
        if let Ok(doc) = parse_document(data, ct) {
            let again = match &doc {
                Document::Manifest(m) => serde_json::to_vec(m).unwrap(),
                Document::Index(i) => serde_json::to_vec(i).unwrap(),
            };
            // What we serialize from a parsed document must parse as the same kind.
            match (doc, parse_document(&again, ct)) {
                (Document::Manifest(_), Ok(Document::Manifest(_)))
                | (Document::Index(_), Ok(Document::Index(_))) => {}
                (_, other) => panic!("round trip changed the document: {other:?}"),
            }
        }
    }
    if let Ok(cfg) = ImageConfig::parse(data, 1) {
        let _ = cfg.platform().to_string();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = s.parse::<berth_imagestore::Reference>() {
            // Normalization is idempotent.
            let again: berth_imagestore::Reference = r.to_string().parse().unwrap();
            assert_eq!(again.to_string(), r.to_string());
        }
        let _ = s.parse::<berth_imagestore::Platform>();
        let _ = s.parse::<berth_imagestore::Digest>();
    }
});
