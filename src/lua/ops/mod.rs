//! Guest operations: Lua arguments in, one agent round trip, Lua values out.
//! Shared by everything that fronts an agent (VMs and workers); which ops
//! exist is [`super::registry`]'s business.
//!
//! Each operation is split in two: a builder turns Lua arguments into a
//! [`request::Request`] (validating them), [`reply::convert`] turns the
//! agent's answer into Lua values. Batches reuse both for every recorded
//! call. Layers, bottom up: `request` → `values` → `reply` → the op families
//! (`fs`, `run`, `raw`, `stream`).

pub mod batch;
pub mod fs;
pub mod raw;
pub mod reply;
pub mod request;
pub mod run;
pub mod stream;
pub mod values;
