//! Links the kernel with its own linker script (load address 1 MiB, a PT_NOTE
//! segment for the PVH entry note) and as a non-PIE executable: the target
//! defaults to static-pie, and rust-lld then refuses the absolute 32-bit
//! relocations of the 32-bit boot stub.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let script = dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
