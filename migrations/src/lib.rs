//! Ordered schema migrations of the metadata store, each with up and down
