//! What x86-64 AMX needs from the CPU and from Linux, shared by the INT8 GEMM
//! (`q8::gemm_amx`) and the bf16 attention tiles (`cpu::attention_bf16_amx`).

/// An AMX feature bit of CPUID.(7,0):EDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// AMX-BF16 (bit 22).
    Bf16,
    /// AMX-INT8 (bit 25).
    Int8,
}

/// Whether CPUID reports AMX-TILE (bit 24) and `feature`.
// `__cpuid` is a safe function on current toolchains and `unsafe` on older ones (MSRV).
#[allow(unused_unsafe)]
pub fn has(feature: Feature) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID is available on every x86-64 CPU; leaf 0 gives the highest leaf.
        let max_leaf = unsafe { std::arch::x86_64::__cpuid(0) }.eax;
        if max_leaf < 7 {
            return false;
        }
        // SAFETY: leaf 7 is supported (checked above).
        let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
        let bit = match feature {
            Feature::Bf16 => 22,
            Feature::Int8 => 25,
        };
        edx & (1 << 24) != 0 && edx & (1 << bit) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// Whether Linux granted this process the AMX tile-data state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once per process; false
/// without AMX-TILE).
pub fn tile_data_permitted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            /// `arch_prctl` request for permission to use an extended state component.
            const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
            /// The AMX tile-data state component.
            const XFEATURE_XTILEDATA: libc::c_ulong = 18;
            if !has(Feature::Bf16) && !has(Feature::Int8) {
                return false;
            }
            // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes this process's
            // permitted extended-state set; it reads no memory of ours.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            rc == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}
