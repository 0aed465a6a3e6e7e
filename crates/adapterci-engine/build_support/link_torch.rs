// Shared by the build scripts of every crate whose binaries or tests run libtorch (included with `include!`).
//
// `cargo:rustc-link-arg` only reaches the targets of the package whose build script prints it, so the engine
// re-exports the libtorch lib dir as `DEP_ADAPTERCI_ENGINE_LIBTORCH_LIB` and each dependent package that links
// an executable prints the same arguments: an rpath to that dir (so binaries start without LD_LIBRARY_PATH)
// and `--no-as-needed` around libtorch so `libtorch_cuda.so` stays NEEDED (without it CUDA is silently
// unavailable on a GPU machine).

/// Prints the link arguments for libtorch in `lib_dir`.
fn emit_torch_link_args(lib_dir: &str) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-L{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for lib in ["torch", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-arg=-l{lib}");
    }
    if std::path::Path::new(lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

/// For packages that depend on the engine: reads the dir the engine exported and prints the arguments.
#[allow(dead_code)]
fn link_torch_from_engine() {
    println!("cargo:rerun-if-env-changed=DEP_ADAPTERCI_ENGINE_LIBTORCH_LIB");
    if let Ok(lib_dir) = std::env::var("DEP_ADAPTERCI_ENGINE_LIBTORCH_LIB") {
        emit_torch_link_args(&lib_dir);
    }
}
