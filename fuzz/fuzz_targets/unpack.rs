//! Layer unpacking must never panic, and whatever the tar says, nothing may appear outside
//! the layer root: the root sits alone in a sentinel directory that must stay that way.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sentinel = tempfile::tempdir().unwrap();
    let root = sentinel.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let _ = berth_imagestore::unpack::unpack_layer(data, &root, None);
    let names: Vec<_> = std::fs::read_dir(sentinel.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["root"], "layer wrote outside its root");
    // remove_tree copes with whatever modes the layer set (a plain remove_dir_all may not).
    berth_imagestore::unpack::remove_tree(&root).unwrap();
});
