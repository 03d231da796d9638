//! Compiles `proto/` with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let file = "outpost/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={root}/{file}");
    let descriptors = protox::compile([file], [root])?;
    tonic_prost_build::configure()
        .build_transport(false)
        // Secret values, sealed or not, must never print: `seal.rs`
        // writes these two `Debug`s by hand.
        .skip_debug(["outpost.agent.v1.SealedSecret", "outpost.agent.v1.SecretValues"])
        .compile_fds(descriptors)?;
    Ok(())
}
