# Residual add + LayerNorm + per-row INT8 quantization of a GEMM's input, as an IRON (mlir-aie)
# design: the device op between two GEMMs, so that one ERT_CMD_CHAIN can cover a whole layer.
#
#   x_out = x + r                                   (--residual; the residual stream update)
#   act   = quantize_row(layer_norm(x_out, gamma, beta, eps))  -> the GEMM's activation image
#
# NOT RUN: no machine we reach has mlir-aie or Peano (neither is on any package registry we can
# use), and none has an NPU. This file is the source `aie/build.sh` compiles where they are
# installed. The same work is described, and tested, in Rust:
#   - geometry and memory budgets: aie/src/design.rs (NormQuantDesign)
#   - the kernel: aie/kernels/norm_quant.cc, bit-exact Rust model aie/src/kernels/norm_quant.rs,
#     which equals the CPU INT8 path (cpu::layer_norm + q8::quant::quantize_row) bit for bit
#   - what the op leaves in the activation image: norm_quant_rows in the same model, which the
#     runtime's emulated device runs (runtime/src/npu_norm.rs)
#   - the dispatch budget: aie/src/budget.rs (norm_quant)
#
# Geometry (npu1: 4 columns; npu2: 8): every core takes 4-row groups of the residual stream.
# With --residual two cores per column, without four: the memory tile's DMA channels are the
# limit (6 MM2S + 6 S2MM). Round rb, column c covers rows (rb * cols + c) * R .. + R, with
# R = 4 * cores per column; core j of the column its rows 4j .. 4j + 4.
#   - x stream (shim column c, MM2S 0): first the parameter object (gamma, beta, eps, padded to
#     one 4-row x object) once per core, then R rows per round; memory tile c splits each L2
#     object over the column's cores
#   - r stream (shim column c, MM2S 1, --residual only): R rows of the residual per round, split
#     the same way
#   - codes: each core writes (d/64 + 1) runs of 256 bytes in the matmul's A-object order (the
#     4x8 blocks of its 4 rows: codes, then the row-scale run); memory tile c joins the cores'
#     runs and re-lays them into rows (d codes + 64 bytes holding the row scale) on its way out;
#     shim S2MM 0 writes them into the activation image the GEMM design reads
#   - x_out (--residual only): joined by memory tile c, shim S2MM 1 writes the updated rows
#
# --quantize: the plain per-row quantize (kernel nq_quant, no norm, no parameters, no residual)
# of a GEMM's f32 output rows, for the GEMM after it (fc1's GELU output before fc2; D = 4 *
# d_model). Same geometry (four cores per column); x is single-buffered in L1 (a 4-row object is
# 16 * D bytes: 32 KB for base), budget in aie/src/design.rs (NormQuantDesign::quantize).
#
# Usage: python3 norm_quant.py --dev npu1 -D 512 [--residual | --quantize] [-M 1500] > nq.mlir
# M is not compiled into the cores (they loop forever); -M only sizes the runtime sequence.
# The kernel object is built with -DNQ_MAX_D=D (its parameter array, aie/build.sh).
import argparse
import sys

import numpy as np
from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
from aie.iron.controlflow import range_
from aie.iron.device import NPU1, NPU2, Tile
from aie.iron.placers import SequentialPlacer
from aie.helpers.taplib import TensorAccessPattern

TILE_K = 64
NQ_ROWS = 4
CORE_ROWS = 4


def norm_quant(dev_name, M, D, residual, quantize=False):
    assert not (residual and quantize), "the plain quantize has no residual"
    dev, cols = (NPU1(), 4) if dev_name == "npu1" else (NPU2(), 8)
    assert D % TILE_K == 0, "D is a multiple of 64"
    per_col = 2 if residual else CORE_ROWS
    R = per_col * NQ_ROWS  # rows per column and round
    rounds = (M + R * cols - 1) // (R * cols)
    m_pad = rounds * R * cols
    runs = D // TILE_K + 1  # code runs + the row-scale run
    run_bytes = NQ_ROWS * TILE_K
    row_bytes = D + TILE_K  # activation image row: codes, scale (f32) and zeros
    words = lambda b: b // 4  # DMA patterns count 32-bit words

    x_ty = np.ndarray[(NQ_ROWS * D,), np.dtype[np.float32]]
    xcol_ty = np.ndarray[(R * D,), np.dtype[np.float32]]
    codes_ty = np.ndarray[(runs * run_bytes,), np.dtype[np.int8]]
    ccol_ty = np.ndarray[(per_col * runs * run_bytes,), np.dtype[np.int8]]
    xbuf_ty = np.ndarray[(m_pad * D,), np.dtype[np.float32]]
    params_ty = np.ndarray[(NQ_ROWS * D,), np.dtype[np.float32]]  # gamma, beta, eps, zeros
    act_ty = np.ndarray[(m_pad * row_bytes,), np.dtype[np.int8]]

    load = Kernel("nq_load_params", "norm_quant.o", [x_ty, np.int32])
    if quantize:
        kern = Kernel("nq_quant", "norm_quant.o", [x_ty, codes_ty, np.int32])
    elif residual:
        kern = Kernel("nq_add_norm", "norm_quant.o", [x_ty, x_ty, x_ty, codes_ty, np.int32])
    else:
        kern = Kernel("nq_norm", "norm_quant.o", [x_ty, codes_ty, np.int32])

    offs = lambda n, size: [j * size for j in range(n)]
    x_in = [ObjectFifo(xcol_ty, name=f"x{c}") for c in range(cols)]
    x_depth = 1 if quantize else 2  # the L1 budget of the wide quantize rows
    x_l1 = [
        x_in[c].cons().split(
            offs(per_col, NQ_ROWS * D), placement=Tile(c, 1), obj_types=[x_ty] * per_col, depths=[x_depth] * per_col
        )
        for c in range(cols)
    ]
    if residual:
        r_in = [ObjectFifo(xcol_ty, name=f"r{c}") for c in range(cols)]
        r_l1 = [
            r_in[c].cons().split(offs(per_col, NQ_ROWS * D), placement=Tile(c, 1), obj_types=[x_ty] * per_col)
            for c in range(cols)
        ]
        xo_l2 = [ObjectFifo(xcol_ty, name=f"xo{c}") for c in range(cols)]
        xo_l1 = [
            xo_l2[c].prod().join(offs(per_col, NQ_ROWS * D), placement=Tile(c, 1), obj_types=[x_ty] * per_col)
            for c in range(cols)
        ]
    # The joined L2 object is [core][run][4 rows x 64 in 4x8 blocks]. Read out as
    # [core * run][row][8-byte block][2 words]: each 16-word unit is one row's 64-byte slice of
    # one run, row-major (the blocks' 8-byte rows side by side).
    unblock = [
        (per_col * runs, words(run_bytes)),
        (NQ_ROWS, words(8)),
        (TILE_K // 8, words(32)),
        (2, 1),
    ]
    c_l2 = [ObjectFifo(ccol_ty, name=f"codes{c}", dims_to_stream=unblock) for c in range(cols)]
    c_l1 = [
        c_l2[c].prod().join(offs(per_col, runs * run_bytes), placement=Tile(c, 1), obj_types=[codes_ty] * per_col)
        for c in range(cols)
    ]

    def core_fn(xs, rs, xo, codes, load, kern):
        if not quantize:
            p = xs.acquire(1)  # the parameter object: copied into the kernel's own array
            load(p, D)
            xs.release(1)
        for _ in range_(sys.maxsize):
            x = xs.acquire(1)
            c = codes.acquire(1)
            if residual:
                r = rs.acquire(1)
                o = xo.acquire(1)
                kern(x, r, o, c, D)
                rs.release(1)
                xo.release(1)
            else:
                kern(x, c, D)
            xs.release(1)
            codes.release(1)

    workers = []
    for c in range(cols):
        for j in range(per_col):
            args = [
                x_l1[c][j].cons(),
                r_l1[c][j].cons() if residual else None,
                xo_l1[c][j].prod() if residual else None,
                c_l1[c][j].prod(),
                load,
                kern,
            ]
            workers.append(Worker(core_fn, args, placement=Tile(c, 2 + j), stack_size=0x800))

    rt = Runtime()
    with rt.sequence(xbuf_ty, xbuf_ty, params_ty, act_ty, xbuf_ty) as (x, r, params, act, x_out):
        rt.start(*workers)
        # The parameter object once per core (stride 0 over the column's cores).
        tg = rt.task_group()
        for c in range(cols if not quantize else 0):
            rt.fill(
                x_in[c].prod(),
                params,
                tap=TensorAccessPattern((1, NQ_ROWS * D), offset=0, sizes=[1, 1, per_col, NQ_ROWS * D], strides=[0, 0, 0, 1]),
                placement=Tile(c, 0),
                task_group=tg,
            )
        rt.finish_task_group(tg)
        for rb in range(rounds):
            tg = rt.task_group()
            for c in range(cols):
                row0 = (rb * cols + c) * R
                rows = TensorAccessPattern((m_pad, D), offset=row0 * D, sizes=[1, 1, R, D], strides=[0, 0, D, 1])
                rt.fill(x_in[c].prod(), x, tap=rows, placement=Tile(c, 0), task_group=tg)
                if residual:
                    rt.fill(r_in[c].prod(), r, tap=rows, placement=Tile(c, 0), task_group=tg)
                    rt.drain(xo_l2[c].cons(), x_out, tap=rows, placement=Tile(c, 0), wait=True, task_group=tg)
                # Units of 64 bytes arrive as [core][run][row]: row 4 * core + row of the round,
                # byte offset 64 * run in it (the last run: the scale and zeros).
                rt.drain(
                    c_l2[c].cons(),
                    act,
                    tap=TensorAccessPattern(
                        (m_pad, row_bytes),
                        offset=row0 * row_bytes,
                        sizes=[per_col, runs, NQ_ROWS, TILE_K],
                        strides=[NQ_ROWS * row_bytes, TILE_K, row_bytes, 1],
                    ),
                    placement=Tile(c, 0),
                    wait=True,
                    task_group=tg,
                )
            rt.finish_task_group(tg)
    return Program(dev, rt).resolve_program(SequentialPlacer())


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--dev", choices=["npu1", "npu2"], default="npu1")
    p.add_argument("-M", type=int, default=1500)
    p.add_argument("-D", type=int, required=True)
    p.add_argument("--residual", action="store_true", help="x += r before the norm (add_norm_quant)")
    p.add_argument("--quantize", action="store_true", help="the plain per-row quantize (nq_quant)")
    a = p.parse_args()
    print(norm_quant(a.dev, a.M, a.D, a.residual, a.quantize))
    sys.exit(0)
