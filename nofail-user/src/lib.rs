// SPDX-License-Identifier: MIT OR Apache-2.0
//! nofail's layers as a library: the `nofail` binary (main.rs) is their
//! one user in production; the fuzz targets (fuzz/) call the parsers and
//! writers directly.

// Layers, lowest first; a layer imports only those below it, and bpf and
// output never import each other (ARCHITECTURE.md, tests/layers.rs).
pub mod alloc;
pub mod bpf;
pub mod cmd;
pub mod kernel;
pub mod model;
pub mod output;
