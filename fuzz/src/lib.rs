// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the fuzz targets share: small, obviously correct references to
//! check nofail's code against.

pub mod glob;
pub mod promtext;
