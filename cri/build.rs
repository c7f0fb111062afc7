fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth/v1/images.proto");
    tonic_prost_build::configure().compile_protos(&["proto/berth/v1/images.proto"], &["proto"])?;
    Ok(())
}
