//! What x86-64 AMX needs from the CPU and from Linux, and the tile configuration, shared by
//! the INT8 GEMM (`q8::gemm_amx`) and the bf16 attention tiles (`cpu::attention_bf16_amx`).

/// An AMX feature bit of CPUID.(7,0):EDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// AMX-BF16 (bit 22).
    Bf16,
    /// AMX-INT8 (bit 25).
    Int8,
}

/// Whether CPUID reports AMX-TILE (bit 24) and `feature`. Read once per process: CPUID
/// traps to the hypervisor in a VM (microseconds), and the kernels ask on every call.
pub fn has(feature: Feature) -> bool {
    static EDX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let edx = *EDX.get_or_init(cpuid_7_edx);
    let bit = match feature {
        Feature::Bf16 => 22,
        Feature::Int8 => 25,
    };
    edx & (1 << 24) != 0 && edx & (1 << bit) != 0
}

/// CPUID.(7,0):EDX (0 where leaf 7 or CPUID does not exist).
// `__cpuid` is a safe function on current toolchains and `unsafe` on older ones (MSRV).
#[allow(unused_unsafe)]
fn cpuid_7_edx() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID is available on every x86-64 CPU; leaf 0 gives the highest leaf.
        let max_leaf = unsafe { std::arch::x86_64::__cpuid(0) }.eax;
        if max_leaf < 7 {
            return 0;
        }
        // SAFETY: leaf 7 is supported (checked above).
        unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
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

/// The 64-byte tile configuration (`LDTILECFG` operand), palette 1.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
pub(crate) struct TileConfig {
    pub(crate) palette: u8,
    pub(crate) start_row: u8,
    pub(crate) reserved: [u8; 14],
    pub(crate) colsb: [u16; 16],
    pub(crate) rows: [u8; 16],
}

/// Every tile 16 rows × 64 bytes, the configuration [`Tiles`] loads.
#[cfg(target_arch = "x86_64")]
const SQUARE: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// This thread's eight tiles, each 16 rows × 64 bytes: configured on creation, released on
/// drop; not `Send` (tiles belong to a thread).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tiles(std::marker::PhantomData<*const ()>);

#[cfg(target_arch = "x86_64")]
impl Tiles {
    /// Configures the tiles on this thread.
    ///
    /// # Panics
    /// If CPUID lacks AMX-TILE or `feature`, or Linux refused the tile data.
    pub(crate) fn new(feature: Feature) -> Tiles {
        assert!(
            has(feature) && tile_data_permitted(),
            "AMX {feature:?} tiles on a CPU or process without them"
        );
        // SAFETY: AMX-TILE is present and the OS granted tile data (asserted); the operand is
        // a valid 64-byte palette-1 configuration.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                cfg = in(reg) &SQUARE as *const TileConfig,
                options(nostack, readonly),
            );
        }
        Tiles(std::marker::PhantomData)
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: configured by `new` on this thread (a `Tiles` is not `Send`).
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}
