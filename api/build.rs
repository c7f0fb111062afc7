fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth/v1/images.proto");
    println!("cargo:rerun-if-changed=proto/berth/v1/containers.proto");
    let serde = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]";
    tonic_prost_build::configure()
        .type_attribute(".berth.v1.ContainerConfig", serde)
        .type_attribute(".berth.v1.PortMapping", serde)
        .type_attribute(".berth.v1.Mount", serde)
        .type_attribute(".berth.v1.RestartPolicy", serde)
        .compile_protos(
            &[
                "proto/berth/v1/images.proto",
                "proto/berth/v1/containers.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
