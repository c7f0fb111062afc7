fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth/shim/v1/shim.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/berth/shim/v1/shim.proto"], &["proto"])?;
    Ok(())
}
