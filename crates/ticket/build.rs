//! Compiles `proto/hyperflight.proto` with a vendored `protoc`, so a fresh machine needs nothing extra.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hyperflight.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&["proto/hyperflight.proto"], &["proto"])?;
    Ok(())
}
