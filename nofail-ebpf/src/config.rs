//! Load-time constants, patched by userspace through aya globals before the
//! programs are verified (`EbpfLoader::set_global`).

/// `__GFP_NOFAIL` as built into the running kernel: `1 << ___GFP_NOFAIL_BIT`
/// read from BTF by userspace (0x8000 on 6.x/7.x; the default is only a
/// placeholder for the verifier).
#[unsafe(no_mangle)]
static GFP_NOFAIL: u32 = 0x8000;

#[inline(always)]
pub fn gfp_nofail() -> u32 {
    // Volatile: the value is rewritten in .rodata after compilation.
    unsafe { core::ptr::read_volatile(&GFP_NOFAIL) }
}
