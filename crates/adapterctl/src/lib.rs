//! The adapterctl command-line client
