// SPDX-License-Identifier: MIT OR GPL-2.0-only
#![no_std]
// Library target only so `nofail-user` can name this crate as a build
// dependency (cargo then rebuilds the embedded object when it changes).
