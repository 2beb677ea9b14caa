//! INT8 dot-product micro-kernels: `R` activation rows × `C` weight channels over the whole
//! (padded) depth, i32 results. Three implementations of one contract, chosen by [`Isa`]:
//! - [`Isa::Scalar`]: one multiply-add per element (the reference);
//! - [`Isa::Portable`]: the AVX2 kernel's i16 multiply-add scheme on [`wide`] 128-bit vectors
//!   (SSE2, NEON, or scalar lanes);
//! - [`Isa::Avx2`]: `std::arch` AVX2 (see `gemm_avx2.rs`): weights sign-extended to i16 and
//!   `vpmaddwd` against i16 activation codes for the GEMM, the `vpmaddubsw` sign trick for
//!   attention scores;
//! - [`Isa::Avx512Vnni`] / [`Isa::AvxVnni`]: 512-bit / 256-bit `vpdpbusd` on offset activation
//!   bytes for the GEMM ([`dot_tile_u8`]), AVX2 for the rest.
//!
//! GEMM activation codes are stored as `i16` (values in `[-127, 127]`): the AVX2 GEMM kernel
//! multiplies in 16 bits, which on Zen 3 beats the 8-bit sign trick (see `gemm_avx2.rs`).
//!
//! Integer sums are exact, so all three give identical results (tested), and the shared f32
//! dequantization after them keeps the whole GEMM bit-exact across paths.

use super::layout::{TILE, TILE_BYTES};

/// Largest row block of a micro-kernel call.
pub const MAX_R: usize = 4;
/// Largest channel block of a micro-kernel call.
pub const MAX_C: usize = 4;

/// Instruction set of the INT8 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Element-by-element reference.
    Scalar,
    /// Portable SIMD on `wide` (SSE2 / NEON / scalar lanes, fixed at compile time).
    Portable,
    /// x86-64 AVX2 (checked at run time).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-512 VNNI + VL (checked at run time): `vpdpbusd` for the GEMM, AVX2 for the
    /// rest.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// x86-64 256-bit VNNI (see `gemm_vnni256.rs`): `vpdpbusd` on ymm for the GEMM, AVX2 for
    /// the rest. Runs the VEX (AVX-VNNI) encoding, or on CPUs without AVX-VNNI but with
    /// AVX-512 VNNI + VL the same kernel with the EVEX encoding (only when forced).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// x86-64 AMX INT8 (see `gemm_amx.rs`): `TDPBUSD` tiles for the GEMM's many-rows path,
    /// the 512-bit VNNI kernel for up to 4 rows, AVX-512/AVX2 for the rest. Only chosen when CPUID reports AMX-INT8, Linux grants tile
    /// data and a start-up self-check matches the scalar reference.
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl Isa {
    /// The fastest instruction set this CPU supports (AMX INT8 when it passes its start-up
    /// self-check > AVX-512 VNNI > AVX-VNNI > AVX2 > portable), unless `AMANUENSIS_Q8_ISA` names one of [`Isa::available`] ([`Isa::name`]:
    /// `scalar`, `portable`, `avx2`, `avxvnni`, `avx512vnni`, `amx`) for comparisons; a forced choice
    /// is noted on stderr in one line. Decided once per process (every GEMM asks; the
    /// environment is not read again).
    pub fn detect() -> Isa {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(Isa::choose)
    }

    /// The name `AMANUENSIS_Q8_ISA` accepts for this instruction set.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => "avxvnni",
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => "amx",
        }
    }

    /// What the kernels of this instruction set run as on this CPU, for notes and reports
    /// (e.g. `avxvnni (EVEX twin: no AVX-VNNI on this CPU)`).
    pub fn describe(self) -> String {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::AvxVnni
            && super::gemm_vnni256::encoding() == Some(super::gemm_vnni256::Encoding::Evex)
        {
            return "avxvnni (256-bit kernel with EVEX vpdpbusd: this CPU has AVX-512 VNNI + VL \
                    but no AVX-VNNI)"
                .to_string();
        }
        self.name().to_string()
    }

    fn choose() -> Isa {
        if let Ok(name) = std::env::var("AMANUENSIS_Q8_ISA") {
            let name = name.trim().to_ascii_lowercase();
            let name = if name == "avxvnni256" {
                "avxvnni"
            } else {
                &name
            };
            let available = Isa::available();
            if let Some(&isa) = available.iter().find(|i| i.name() == name) {
                eprintln!(
                    "amanuensis: INT8 kernels forced by AMANUENSIS_Q8_ISA: {}",
                    isa.describe()
                );
                return isa;
            }
            let names: Vec<_> = available.iter().map(|i| i.name()).collect();
            eprintln!(
                "amanuensis: AMANUENSIS_Q8_ISA={name:?} is not available on this CPU \
                 (available: {}); choosing automatically",
                names.join(", ")
            );
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            if super::gemm_amx::usable() {
                return Isa::Amx;
            }
            if super::gemm_vnni::available() {
                return Isa::Avx512Vnni;
            }
            if super::gemm_vnni256::has_vex() {
                return Isa::AvxVnni;
            }
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Every instruction set usable on this CPU (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![Isa::Scalar, Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            v.push(Isa::Avx2);
            if super::gemm_vnni::available() {
                v.push(Isa::Avx512Vnni);
            }
            if super::gemm_vnni256::encoding().is_some() {
                v.push(Isa::AvxVnni);
            }
            if super::gemm_amx::usable() {
                v.push(Isa::Amx);
            }
        }
        v
    }
}

/// Channels per micro-kernel call for a block of `rows` rows: 4 for 1-2 rows (weights
/// dominate: more channels per activation load), 2 for 3-4 rows (4×2 = 8 accumulators leave
/// AVX2 registers for the operands).
#[inline]
pub fn cols_for(rows: usize) -> usize {
    if rows <= 2 {
        4
    } else {
        2
    }
}

/// The i32 sums of up to `MAX_R` rows against the channels of one weight tile.
pub type TileSums = [[i32; TILE]; MAX_R];

/// `out[r][c] = Σ_{p < kp} x[r·kp + p] · w(c, p)` for `r < rows`, `c < width` (see
/// [`dot_block`] for `w` and `x`); entries up to the next multiple of `cols_for(rows)` past
/// `width` may be written too.
///
/// # Panics
/// If `rows` is not in `1..=MAX_R`, `width > TILE`, or a slice is too short.
pub fn dot_tile(
    isa: Isa,
    rows: usize,
    x: &[i16],
    k_tiles: usize,
    w_tiles: &[i8],
    width: usize,
    out: &mut TileSums,
) {
    assert!(width <= TILE, "dot_tile: width {width}");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx => {
            super::gemm_avx2::dot_tile(rows, x, k_tiles, w_tiles, width, out)
        }
        _ => {
            let cols = cols_for(rows);
            let mut acc = [0; MAX_R * MAX_C];
            for c0 in (0..width).step_by(cols) {
                dot_block(isa, rows, x, k_tiles, w_tiles, c0, &mut acc);
                for (r, out) in out.iter_mut().enumerate().take(rows) {
                    out[c0..c0 + cols].copy_from_slice(&acc[r * cols..(r + 1) * cols]);
                }
            }
        }
    }
}

/// `acc[r·c_count + c] = Σ_{p < kp} x[r·kp + p] · w(c0 + c, p)` for `r < rows`,
/// `c < cols_for(rows)`, where `kp = k_tiles·TILE`,
/// `w(ch, p) = w_tiles[(p / TILE)·TILE_BYTES + ch·TILE + p % TILE]` (one output-channel tile of
/// the tile-major layout) and `x` holds activation codes (`[-127, 127]`, see
/// [`activation_row`]) as i16.
///
/// # Panics
/// If `rows` is not in `1..=MAX_R`, `c0 + cols > TILE`, or a slice is too short.
pub fn dot_block(
    isa: Isa,
    rows: usize,
    x: &[i16],
    k_tiles: usize,
    w_tiles: &[i8],
    c0: usize,
    acc: &mut [i32; MAX_R * MAX_C],
) {
    let kp = k_tiles * TILE;
    let cols = cols_for(rows);
    assert!((1..=MAX_R).contains(&rows), "dot_block: rows {rows}");
    assert!(c0 + cols <= TILE, "dot_block: channels {c0}+{cols}");
    assert!(x.len() >= rows * kp, "dot_block: x too short");
    assert!(
        w_tiles.len() >= k_tiles * TILE_BYTES,
        "dot_block: w too short"
    );
    match isa {
        Isa::Scalar => scalar(rows, cols, x, kp, w_tiles, c0, acc),
        Isa::Portable => match rows {
            1 => portable::<1, 4>(x, k_tiles, w_tiles, c0, acc),
            2 => portable::<2, 4>(x, k_tiles, w_tiles, c0, acc),
            3 => portable::<3, 2>(x, k_tiles, w_tiles, c0, acc),
            _ => portable::<4, 2>(x, k_tiles, w_tiles, c0, acc),
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx => {
            let mut tile = [[0; TILE]; MAX_R];
            super::gemm_avx2::dot_tile(rows, x, k_tiles, w_tiles, c0 + cols, &mut tile);
            for (r, t) in tile.iter().enumerate().take(rows) {
                acc[r * cols..(r + 1) * cols].copy_from_slice(&t[c0..c0 + cols]);
            }
        }
    }
}

/// Attention scores in i32: `out[j] = Σ_{p < d} q[p] · keys[j·stride + p]` for
/// `j < out.len()`, with `d = q.len()` a multiple of 32 (zero-padded head width).
///
/// # Panics
/// If `d` is not a multiple of 32 or `keys` is too short.
pub fn dot_keys(isa: Isa, q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    let d = q.len();
    assert!(
        d.is_multiple_of(32),
        "dot_keys: head width {d} not a multiple of 32"
    );
    if out.is_empty() {
        return;
    }
    assert!(
        keys.len() >= (out.len() - 1) * stride + d,
        "dot_keys: keys too short"
    );
    match isa {
        Isa::Scalar => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = (0..d)
                    .map(|p| q[p] as i32 * keys[j * stride + p] as i32)
                    .sum();
            }
        }
        Isa::Portable => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = dot_i8_portable(q, &keys[j * stride..j * stride + d]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx => {
            super::gemm_avx2::dot_keys(q, keys, stride, out)
        }
    }
}

/// Quantizes one activation row into the i16 codes [`dot_block`] reads: `row[..x.len()]` =
/// the codes of [`super::quant::quantize_row`], the rest zero; returns the row's scale.
///
/// # Panics
/// If `row` is shorter than `x`.
pub fn activation_row(isa: Isa, x: &[f32], row: &mut [i16]) -> f32 {
    assert!(row.len() >= x.len(), "activation_row: row shorter than x");
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx) {
        return super::gemm_avx2::activation_row(x, row);
    }
    let _ = isa;
    let (head, pad) = row.split_at_mut(x.len());
    pad.fill(0);
    match super::quant::row_scale(super::quant::max_abs(x)) {
        Some((scale, inv)) => {
            for (o, &v) in head.iter_mut().zip(x) {
                *o = super::quant::code(v * inv) as i16;
            }
            scale
        }
        None => {
            head.fill(0);
            0.0
        }
    }
}

/// Quantizes one activation row into offset bytes for the VNNI kernel: `row[i] = code + 128`
/// with the codes of [`activation_row`] (128, i.e. code 0, past `x.len()`); returns the scale.
///
/// # Panics
/// If `row` is shorter than `x`.
pub fn activation_row_u8(isa: Isa, x: &[f32], row: &mut [u8]) -> f32 {
    assert!(
        row.len() >= x.len(),
        "activation_row_u8: row shorter than x"
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512Vnni | Isa::Amx) && super::gemm_vnni::available() {
        return super::gemm_vnni::activation_row_u8(x, row);
    }
    let (head, pad) = row.split_at_mut(x.len());
    pad.fill(128);
    #[cfg(target_arch = "x86_64")]
    let simd = matches!(isa, Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx);
    #[cfg(not(target_arch = "x86_64"))]
    let simd = {
        let _ = isa;
        false
    };
    let max = if simd {
        #[cfg(target_arch = "x86_64")]
        {
            super::gemm_avx2::max_abs(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!()
    } else {
        super::quant::max_abs(x)
    };
    let Some((scale, inv)) = super::quant::row_scale(max) else {
        head.fill(128);
        return 0.0;
    };
    let mut codes = [0i16; TILE];
    for (xs, out) in x.chunks(TILE).zip(head.chunks_mut(TILE)) {
        let codes = &mut codes[..xs.len()];
        if simd {
            #[cfg(target_arch = "x86_64")]
            super::gemm_avx2::codes_i16(xs, inv, codes);
        } else {
            for (c, &v) in codes.iter_mut().zip(xs) {
                *c = super::quant::code(v * inv) as i16;
            }
        }
        for (o, &c) in out.iter_mut().zip(codes.iter()) {
            *o = (c + 128) as u8;
        }
    }
    scale
}

/// [`dot_tile`] for offset activation bytes ([`activation_row_u8`]): `out[r][c] =
/// Σ_p (x[r·kp + p] - 128) · w(c, p)`, with `sums[c] = Σ_p w(c, p)` for the tile's channels
/// ([`super::layout::QuantMatrix::code_sums`]). Runs the VNNI kernels on
/// [`Isa::Avx512Vnni`] and [`Isa::AvxVnni`], a scalar loop otherwise (the reference).
///
/// # Panics
/// If `rows` is not in `1..=MAX_R`, `width > TILE`, or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub fn dot_tile_u8(
    isa: Isa,
    rows: usize,
    x: &[u8],
    k_tiles: usize,
    w_tiles: &[i8],
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let kp = k_tiles * TILE;
    assert!(
        (1..=MAX_R).contains(&rows) && width <= TILE,
        "dot_tile_u8: rows or width"
    );
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => {
            return super::gemm_vnni::dot_tile(rows, x, k_tiles, w_tiles, sums, width, out)
        }
        Isa::AvxVnni => {
            return super::gemm_vnni256::dot_tile(rows, x, k_tiles, w_tiles, sums, width, out)
        }
        // Up to 4 rows (decoder GEMVs, attention blocks) reuse no tile: the 512-bit VNNI
        // kernel is faster there (every AMX CPU has it; without it, the scalar loop below); the
        // GEMM's many-rows path takes the AMX block kernel (`gemm_amx::block`).
        Isa::Amx if super::gemm_vnni::available() => {
            return super::gemm_vnni::dot_tile(rows, x, k_tiles, w_tiles, sums, width, out)
        }
        _ => {}
    }
    let _ = (isa, sums);
    for (r, out) in out.iter_mut().enumerate().take(rows) {
        for (c, o) in out.iter_mut().enumerate().take(width) {
            *o = (0..kp)
                .map(|p| {
                    (x[r * kp + p] as i32 - 128)
                        * w_tiles[(p / TILE) * TILE_BYTES + c * TILE + p % TILE] as i32
                })
                .sum();
        }
    }
}

/// Probability-weighted sums of value rows (attention's `P·V`, in f32):
/// `out[r·out_stride + c] = Σ_{j < seen} p[r·p_stride + j] · v[j·v_stride + c]` for
/// `r < rows` (≤ [`MAX_R`]), `c < d`, accumulated from 0 in increasing `j` with a separate
/// multiply and add per term, so every instruction set gives bit-identical results.
///
/// # Panics
/// If `rows > MAX_R` or a slice is too short.
#[allow(clippy::too_many_arguments)] // strides of three matrices
pub fn weighted_sum(
    isa: Isa,
    rows: usize,
    p: &[f32],
    p_stride: usize,
    seen: usize,
    v: &[f32],
    v_stride: usize,
    d: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(rows <= MAX_R, "weighted_sum: rows {rows}");
    if rows == 0 || d == 0 {
        return;
    }
    assert!(
        p.len() >= (rows - 1) * p_stride + seen,
        "weighted_sum: p too short"
    );
    assert!(
        seen == 0 || v.len() >= (seen - 1) * v_stride + d,
        "weighted_sum: v too short"
    );
    assert!(
        out.len() >= (rows - 1) * out_stride + d,
        "weighted_sum: out too short"
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx) && d.is_multiple_of(16)
    {
        return super::gemm_avx2::weighted_sum(
            rows, p, p_stride, seen, v, v_stride, d, out, out_stride,
        );
    }
    let _ = isa;
    for r in 0..rows {
        let o = &mut out[r * out_stride..r * out_stride + d];
        o.fill(0.0);
        for (j, &pj) in p[r * p_stride..r * p_stride + seen].iter().enumerate() {
            for (o, &vv) in o.iter_mut().zip(&v[j * v_stride..j * v_stride + d]) {
                *o += pj * vv;
            }
        }
    }
}

fn scalar(
    rows: usize,
    cols: usize,
    x: &[i16],
    kp: usize,
    w: &[i8],
    c0: usize,
    acc: &mut [i32; MAX_R * MAX_C],
) {
    for r in 0..rows {
        for c in 0..cols {
            let mut s = 0i32;
            for p in 0..kp {
                let wv = w[(p / TILE) * TILE_BYTES + (c0 + c) * TILE + p % TILE];
                s += x[r * kp + p] as i32 * wv as i32;
            }
            acc[r * cols + c] = s;
        }
    }
}

/// The portable register block on [`wide`] (SSE2 on baseline x86-64, NEON on aarch64, scalar
/// lanes elsewhere), the AVX2 kernel's arithmetic in 128-bit vectors: per 16 k values, each
/// channel's weights are sign-extended to two `i16x8` once and reused by every row; each row
/// adds two `i16x8::dot` (`pmaddwd` / `smull`+`addp`: 8 multiply-adds into 4 i32 lanes,
/// |a·b| ≤ 127², no overflow) to its `i32x4` accumulator; lanes are summed at the end. Integer
/// sums in any order are exact, so the result equals [`scalar`]'s.
fn portable<const R: usize, const C: usize>(
    x: &[i16],
    k_tiles: usize,
    w: &[i8],
    c0: usize,
    acc: &mut [i32; MAX_R * MAX_C],
) {
    use wide::{i16x16, i16x8, i32x4, i8x16};
    let kp = k_tiles * TILE;
    let x = &x[..R * kp];
    let mut sums = [[i32x4::ZERO; C]; R];
    for kt in 0..k_tiles {
        let tile = &w[kt * TILE_BYTES..(kt + 1) * TILE_BYTES];
        for part in (0..TILE).step_by(16) {
            let mut wv = [[i16x8::ZERO; 2]; C];
            for (c, wv) in wv.iter_mut().enumerate() {
                let bytes: [i8; 16] = tile[(c0 + c) * TILE + part..][..16]
                    .try_into()
                    .expect("16 bytes");
                *wv = bytemuck::cast(i16x16::from_i8x16(i8x16::new(bytes)));
            }
            for (r, sums) in sums.iter_mut().enumerate() {
                let xr = &x[r * kp + kt * TILE + part..][..16];
                let lo = i16x8::from_slice_unaligned(&xr[..8]);
                let hi = i16x8::from_slice_unaligned(&xr[8..]);
                for (s, wv) in sums.iter_mut().zip(&wv) {
                    *s += lo.dot(wv[0]) + hi.dot(wv[1]);
                }
            }
        }
    }
    for (r, sums) in sums.iter().enumerate() {
        for (c, s) in sums.iter().enumerate() {
            acc[r * C + c] = s.to_array().iter().sum();
        }
    }
}

/// Dot product of `a` and `b` (equal lengths, a multiple of 16) on [`wide`]: sign-extended
/// to i16, `i16x8::dot` into i32 lanes.
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    use wide::{i16x16, i16x8, i32x4, i8x16};
    let mut s = i32x4::ZERO;
    for (a, b) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        let widen = |v: &[i8]| -> [i16x8; 2] {
            let bytes: [i8; 16] = v.try_into().expect("16 bytes");
            bytemuck::cast(i16x16::from_i8x16(i8x16::new(bytes)))
        };
        let (a, b) = (widen(a), widen(b));
        s += a[0].dot(b[0]) + a[1].dot(b[1]);
    }
    s.to_array().iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    #[test]
    fn activation_rows_agree_across_isas() {
        let mut rng = Rng::new(23);
        for len in [0, 1, 31, 32, 33, 100, 384, 1536] {
            for special in [false, true] {
                let mut x = rng.vec(len, 3.0);
                if special && len > 0 {
                    // Exact ties after scaling (max = 127 → inv = 1), the floats just under
                    // ties (0.5⁻ is where adding a half would round up), NaN, huge values.
                    x[0] = 127.0;
                    let under = |t: f32| f32::from_bits(t.to_bits() - 1);
                    let cases = [
                        0.5,
                        -0.5,
                        2.5,
                        -126.5,
                        f32::NAN,
                        1e-30,
                        -0.0,
                        under(0.5),
                        -under(0.5),
                        under(1.5),
                        under(126.5),
                        -under(63.5),
                    ];
                    for (i, v) in x.iter_mut().enumerate().skip(1) {
                        *v = cases[i % cases.len()];
                    }
                }
                let width = len.next_multiple_of(64).max(64);
                let mut want = vec![1i16; width];
                let s_want = activation_row(Isa::Scalar, &x, &mut want);
                for isa in Isa::available() {
                    let mut got = vec![2i16; width];
                    let s_got = activation_row(isa, &x, &mut got);
                    assert_eq!(s_got.to_bits(), s_want.to_bits(), "{isa:?} len {len}");
                    assert_eq!(got, want, "{isa:?} len {len} special {special}");
                    // The offset-byte rows of the VNNI and AMX paths: the same codes + 128.
                    let mut bytes = vec![7u8; width];
                    let s_bytes = activation_row_u8(isa, &x, &mut bytes);
                    assert_eq!(s_bytes.to_bits(), s_want.to_bits(), "{isa:?} len {len} u8");
                    let same = bytes.iter().zip(&want).all(|(&b, &c)| b as i16 - 128 == c);
                    assert!(same, "{isa:?} len {len} special {special}: offset bytes");
                }
            }
        }
    }

    #[test]
    fn offset_byte_rows_and_tiles_agree_with_the_i16_path() {
        let mut rng = Rng::new(25);
        for k_tiles in [1, 3, 24] {
            let kp = k_tiles * TILE;
            let k = kp - 5;
            let w: Vec<i8> = (0..k_tiles * TILE_BYTES)
                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                .collect();
            let sums: Vec<i32> = (0..TILE)
                .map(|c| {
                    (0..kp)
                        .map(|p| w[(p / TILE) * TILE_BYTES + c * TILE + p % TILE] as i32)
                        .sum()
                })
                .collect();
            let x = rng.vec(MAX_R * k, 2.0);
            let mut x16 = vec![0i16; MAX_R * kp];
            let mut x8 = vec![0u8; MAX_R * kp];
            for r in 0..MAX_R {
                let xs = &x[r * k..(r + 1) * k];
                let s16 = activation_row(Isa::Scalar, xs, &mut x16[r * kp..(r + 1) * kp]);
                for isa in Isa::available() {
                    let s8 = activation_row_u8(isa, xs, &mut x8[r * kp..(r + 1) * kp]);
                    assert_eq!(s8.to_bits(), s16.to_bits());
                    let same = x8[r * kp..(r + 1) * kp]
                        .iter()
                        .zip(&x16[r * kp..(r + 1) * kp])
                        .all(|(&b, &c)| b as i16 - 128 == c);
                    assert!(same, "{isa:?} offset codes");
                }
            }
            for rows in 1..=MAX_R {
                for width in [1, 30, 64] {
                    let mut want = [[0; TILE]; MAX_R];
                    dot_tile(Isa::Scalar, rows, &x16, k_tiles, &w, width, &mut want);
                    for isa in Isa::available() {
                        let mut got = [[9; TILE]; MAX_R];
                        dot_tile_u8(isa, rows, &x8, k_tiles, &w, &sums, width, &mut got);
                        for r in 0..rows {
                            assert_eq!(got[r][..width], want[r][..width], "{isa:?} rows {rows}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn weighted_sums_agree_across_isas() {
        let mut rng = Rng::new(24);
        for (rows, seen, d, v_stride) in [
            (1, 1, 16, 16),
            (4, 37, 64, 384),
            (3, 100, 48, 96),
            (2, 5, 7, 7),
        ] {
            let p = rng.vec(MAX_R * 128, 1.0);
            let v = rng.vec(seen * v_stride, 1.0);
            let mut want = vec![f32::NAN; MAX_R * v_stride];
            weighted_sum(
                Isa::Scalar,
                rows,
                &p,
                128,
                seen,
                &v,
                v_stride,
                d,
                &mut want,
                v_stride,
            );
            let direct: f32 = (0..seen).fold(0.0, |o, j| o + p[j] * v[j * v_stride + 1 % d]);
            assert_eq!(want[1 % d], direct);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; MAX_R * v_stride];
                weighted_sum(
                    isa, rows, &p, 128, seen, &v, v_stride, d, &mut got, v_stride,
                );
                for r in 0..rows {
                    let (g, w) = (&got[r * v_stride..][..d], &want[r * v_stride..][..d]);
                    assert!(
                        g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn dot_keys_agree_across_isas() {
        let mut rng = Rng::new(22);
        for (d, stride, count) in [(32, 32, 1), (64, 384, 7), (64, 64, 13), (96, 200, 4)] {
            let q: Vec<i8> = (0..d)
                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                .collect();
            let keys: Vec<i8> = (0..(count - 1) * stride + d)
                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                .collect();
            let mut want = vec![0; count];
            dot_keys(Isa::Scalar, &q, &keys, stride, &mut want);
            if count > 1 {
                let direct: i32 = (0..d).map(|p| q[p] as i32 * keys[stride + p] as i32).sum();
                assert_eq!(want[1], direct);
            }
            for isa in Isa::available() {
                let mut got = vec![9; count];
                dot_keys(isa, &q, &keys, stride, &mut got);
                assert_eq!(got, want, "{isa:?} d={d} count={count}");
            }
        }
    }

    #[test]
    fn all_isas_agree_exactly_including_extreme_codes() {
        let mut rng = Rng::new(21);
        for k_tiles in [1, 2, 5, 24] {
            let kp = k_tiles * TILE;
            let w: Vec<i8> = (0..k_tiles * TILE_BYTES)
                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                .collect();
            for fill in [None, Some(127i8), Some(-127i8)] {
                let plain: Vec<i8> = match fill {
                    None => (0..MAX_R * kp)
                        .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                        .collect(),
                    Some(v) => vec![v; MAX_R * kp],
                };
                let x: Vec<i16> = plain.iter().map(|&c| c as i16).collect();
                let w = match fill {
                    None => w.clone(),
                    Some(v) => vec![v; k_tiles * TILE_BYTES],
                };
                for rows in 1..=MAX_R {
                    for c0 in [0, 4, 60] {
                        let mut want = [0; MAX_R * MAX_C];
                        dot_block(Isa::Scalar, rows, &x, k_tiles, &w, c0, &mut want);
                        // Independent check of one entry.
                        let s: i32 = (0..kp)
                            .map(|p| {
                                x[p] as i32
                                    * w[(p / TILE) * TILE_BYTES + c0 * TILE + p % TILE] as i32
                            })
                            .sum();
                        assert_eq!(want[0], s);
                        for isa in Isa::available() {
                            let mut got = [7; MAX_R * MAX_C];
                            dot_block(isa, rows, &x, k_tiles, &w, c0, &mut got);
                            let n = rows * cols_for(rows);
                            assert_eq!(
                                got[..n],
                                want[..n],
                                "{isa:?} rows {rows} k_tiles {k_tiles}"
                            );
                        }
                    }
                }
            }
        }
    }
}
