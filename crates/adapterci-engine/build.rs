//! Links libtorch for the engine's own tests and examples and exports the libtorch lib dir to dependents
//! (see build_support/link_torch.rs for why both are needed).

include!("build_support/link_torch.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=build_support/link_torch.rs");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) => {
            emit_torch_link_args(&lib_dir);
            println!("cargo:libtorch_lib={lib_dir}");
        }
        Err(_) => {
            println!("cargo:warning=torch-sys did not report its libtorch lib dir; binaries need LD_LIBRARY_PATH")
        }
    }
}
