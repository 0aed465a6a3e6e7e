//! Links libtorch into this package's binaries and tests (rpath, CUDA kept): see the engine's link_torch.rs.

include!("../adapterci-engine/build_support/link_torch.rs");

fn main() {
    link_torch_from_engine();
}
