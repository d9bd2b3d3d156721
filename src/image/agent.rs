//! The guest agent, embedded at build time (see `build.rs`), so that one
//! shared object carries everything a guest needs.

/// The static agent binary.
pub static AGENT: &[u8] = include_bytes!(env!("PROVIUM_AGENT_BIN"));
