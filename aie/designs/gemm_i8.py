# INT8 GEMM with a dequantize / bias / GELU epilogue, as an IRON (mlir-aie) design.
#
#   out[m, n] = f(acc[m, n] * sx[m] * sw[n] + b[n]),  acc = sum_k a[m, k] * w[n, k]  (i32)
#
# NOT RUN: no machine we reach has mlir-aie or Peano (neither is on any package registry we can
# use), and none has an NPU. This file is the source `aie/build.sh` compiles where they are
# installed. The same data movement is described, and tested, in Rust:
#   - geometry and memory budgets: aie/src/design.rs (GemmDesign)
#   - the runtime sequence as a TXN stream: aie/src/program/gemm.rs (gemm_program), which is
#     what the Amanuensis runtime submits (this file's runtime sequence is the reference for it)
#   - the array, functionally: aie/src/program/replay.rs (gemm_array)
#   - the kernels: aie/kernels/matmul_i8.cc (bit-exact Rust model aie/src/kernels/matmul.rs)
#
# Geometry (npu1: 4 columns x 4 core rows; npu2: 8 x 4):
#   - core (row j, column c) computes 32-row x 64-channel output tiles: rows 128*rb + 32*j of
#     each 128-row super-block rb, channel blocks c, c + cols, c + 2*cols, ...
#   - row stream j (shim column j, MM2S 0): the activation image rows of core row j, k/64 + 1
#     objects of 32 x 64 bytes per channel group (the last object carries the row scales);
#     memory tile j re-lays each object into 4x8 blocks and broadcasts it to the cores of row j
#   - column stream c (shim column c, MM2S 1): the weight image's channel blocks of column c,
#     each k/64 file tiles of 64 x 64 (as the model file holds them) + 1 parameter tile;
#     memory tile c re-lays them into 8x8 blocks and broadcasts them to the cores of column c
#   - outputs: memory tile c joins the four 32 x 64 f32 tiles of column c into 128 x 64 and
#     shim column c (S2MM 0) writes them row-major into the output
#
# Usage: python3 gemm_i8.py --dev npu1 -K 512 -N 2048 [--gelu] [-M 128] > gemm.mlir
# M is not compiled into the cores (they loop over super-blocks forever); -M only sizes the
# runtime sequence emitted here. The Amanuensis runtime generates the instruction stream for
# any M with gemm_program in Rust. C objects are typed int32 here: the epilogue writes f32 bits
# over them in place, and the DMAs move 32-bit words either way.
import argparse
import sys

import numpy as np
from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
from aie.iron.controlflow import range_
from aie.iron.device import NPU1, NPU2, Tile
from aie.iron.placers import SequentialPlacer
from aie.helpers.taplib import TensorAccessPattern

TILE_M, TILE_K, TILE_N = 32, 64, 64
CORE_ROWS = 4
BLOCK_ROWS = CORE_ROWS * TILE_M


def gemm_i8(dev_name, M, K, N, gelu):
    dev, cols = (NPU1(), 4) if dev_name == "npu1" else (NPU2(), 8)
    assert K % TILE_K == 0 and N % TILE_N == 0, "K and N are multiples of 64"
    kt = K // TILE_K
    n_tiles = N // TILE_N
    tiles_of = [(n_tiles + cols - 1 - c) // cols for c in range(cols)]
    groups = tiles_of[0]
    row_blocks = (M + BLOCK_ROWS - 1) // BLOCK_ROWS
    m_pad = row_blocks * BLOCK_ROWS
    row_bytes = K + TILE_K  # codes, then the row scale (f32) and zeros
    block_bytes = (kt + 1) * TILE_N * TILE_K  # k/64 file tiles + the parameter tile

    a_ty = np.ndarray[(TILE_M * TILE_K,), np.dtype[np.int8]]
    w_ty = np.ndarray[(TILE_N * TILE_K,), np.dtype[np.int8]]
    c_ty = np.ndarray[(TILE_M * TILE_N,), np.dtype[np.int32]]
    c_join_ty = np.ndarray[(BLOCK_ROWS * TILE_N,), np.dtype[np.int32]]
    act_ty = np.ndarray[(m_pad * row_bytes,), np.dtype[np.int8]]
    wimg_ty = np.ndarray[(n_tiles * block_bytes,), np.dtype[np.int8]]
    out_ty = np.ndarray[(m_pad * N,), np.dtype[np.float32]]

    zero = Kernel("zero_i32", "matmul_i8.o", [c_ty])
    matmul = Kernel("matmul_i8_i32", "matmul_i8.o", [a_ty, w_ty, c_ty])
    epilogue = Kernel("dequant_bias_act", "matmul_i8.o", [c_ty, a_ty, w_ty, np.int32])

    # Memory-tile re-layout, in 32-bit words (the DMA granule): A rows of 64 bytes into 4x8
    # blocks [8 row groups][8 k blocks][4 rows][8 bytes]; W channel rows into 8x8 blocks.
    a_blocks = [(TILE_M // 4, 4 * TILE_K // 4), (TILE_K // 8, 2), (4, TILE_K // 4), (2, 1)]
    w_blocks = [(TILE_N // 8, 8 * TILE_K // 4), (TILE_K // 8, 2), (8, TILE_K // 4), (2, 1)]

    rows_in = [ObjectFifo(a_ty, name=f"rows{j}") for j in range(CORE_ROWS)]
    rows_l1 = [
        rows_in[j].cons().forward(placement=Tile(j, 1), dims_to_stream=a_blocks, name=f"rows{j}_l1")
        for j in range(CORE_ROWS)
    ]
    cols_in = [ObjectFifo(w_ty, name=f"cols{c}") for c in range(cols) if tiles_of[c]]
    cols_l1 = [
        cols_in[c].cons().forward(placement=Tile(c, 1), dims_to_stream=w_blocks, name=f"cols{c}_l1")
        for c in range(len(cols_in))
    ]
    outs_l2 = [ObjectFifo(c_join_ty, name=f"out{c}") for c in range(len(cols_in))]
    outs_l1 = [
        outs_l2[c].prod().join(
            [j * TILE_M * TILE_N for j in range(CORE_ROWS)],
            placement=Tile(c, 1),
            obj_types=[c_ty] * CORE_ROWS,
            names=[f"out{c}_{j}" for j in range(CORE_ROWS)],
        )
        for c in range(len(cols_in))
    ]

    def core_fn(rows, cols_, out, zero, matmul, epilogue, tiles):
        mode = 1 if gelu else 0
        # Forever: one pass per super-block, as many as the runtime sequence feeds. Nothing
        # here depends on M, so one xclbin per (K, N, epilogue) serves every M.
        for _ in range_(sys.maxsize):
            for g in range(groups):
                if g < tiles:
                    c = out.acquire(1)
                    zero(c)
                    for _ in range_(kt):
                        a = rows.acquire(1)
                        w = cols_.acquire(1)
                        matmul(a, w, c)
                        rows.release(1)
                        cols_.release(1)
                    s = rows.acquire(1)
                    p = cols_.acquire(1)
                    epilogue(c, s, p, mode)
                    rows.release(1)
                    cols_.release(1)
                    out.release(1)
                else:
                    # This column has fewer channel blocks: let the broadcast row objects pass.
                    for _ in range_(kt + 1):
                        rows.acquire(1)
                        rows.release(1)

    workers = []
    for c in range(len(cols_in)):
        for j in range(CORE_ROWS):
            workers.append(
                Worker(
                    core_fn,
                    [rows_l1[j].cons(), cols_l1[c].cons(), outs_l1[c][j].prod(), zero, matmul, epilogue, tiles_of[c]],
                    placement=Tile(c, 2 + j),
                    stack_size=0x800,
                )
            )

    rt = Runtime()
    with rt.sequence(act_ty, wimg_ty, out_ty) as (act, wimg, out):
        rt.start(*workers)
        for rb in range(row_blocks):
            tg = rt.task_group()
            for j in range(CORE_ROWS):
                # d0 = 64 bytes of a row, d1 = 32 rows, d2 = k/64 + 1 depth steps; once per group.
                rt.fill(
                    rows_in[j].prod(),
                    act,
                    tap=TensorAccessPattern(
                        (m_pad, row_bytes),
                        offset=(rb * BLOCK_ROWS + j * TILE_M) * row_bytes,
                        sizes=[groups, kt + 1, TILE_M, TILE_K],
                        strides=[0, TILE_K, row_bytes, 1],
                    ),
                    placement=Tile(j, 0),
                    task_group=tg,
                )
            for c in range(len(cols_in)):
                rt.fill(
                    cols_in[c].prod(),
                    wimg,
                    tap=TensorAccessPattern(
                        (n_tiles, block_bytes),
                        offset=c * block_bytes,
                        sizes=[tiles_of[c], 1, 1, block_bytes],
                        strides=[cols * block_bytes, 0, 0, 1],
                    ),
                    placement=Tile(c, 0),
                    task_group=tg,
                )
                rt.drain(
                    outs_l2[c].cons(),
                    out,
                    tap=TensorAccessPattern(
                        (m_pad, N),
                        offset=rb * BLOCK_ROWS * N + c * TILE_N,
                        sizes=[tiles_of[c], 1, BLOCK_ROWS, TILE_N],
                        strides=[cols * TILE_N, 0, N, 1],
                    ),
                    placement=Tile(c, 0),
                    wait=True,
                    task_group=tg,
                )
            # The Rust generator keeps two super-blocks in flight (two BD sets); IRON's
            # task groups finish one before the next reuses its BDs.
            rt.finish_task_group(tg)
    return Program(dev, rt).resolve_program(SequentialPlacer())


def gemm_i8_decoder(dev_name, M, K, N, gelu):
    """Decoder mapping (aie/src/design.rs Mapping::ChannelSpread) for M of 1-5 (greedy, beam 5).

    32-row super-blocks; column c takes channel quads c, c + cols, ...; core (j, c) computes
    block 4q + j of each quad. Each column's shim MM2S 0 carries its own copy of the 32 rows
    (k/64 + 1 objects, once per quad), broadcast by memory tile c to its four cores. Shim MM2S 1
    carries, per quad and depth step, the four blocks' tiles (16 KB); memory tile c splits them
    one tile per core. The four 32 x 64 outputs are joined side by side and written as
    32 rows x 256 channels. The weight image is padded to whole quads (zero blocks).
    """
    dev, cols = (NPU1(), 4) if dev_name == "npu1" else (NPU2(), 8)
    assert K % TILE_K == 0 and N % TILE_N == 0, "K and N are multiples of 64"
    kt = K // TILE_K
    n_img = -(-(N // TILE_N) // CORE_ROWS) * CORE_ROWS
    quads_of = [(n_img // CORE_ROWS + cols - 1 - c) // cols for c in range(cols)]
    used = [c for c in range(cols) if quads_of[c]]
    row_blocks = (M + TILE_M - 1) // TILE_M
    m_pad = row_blocks * TILE_M
    row_bytes = K + TILE_K
    block_bytes = (kt + 1) * TILE_N * TILE_K
    width = n_img * TILE_N
    tile = TILE_N * TILE_K

    a_ty = np.ndarray[(TILE_M * TILE_K,), np.dtype[np.int8]]
    w_ty = np.ndarray[(tile,), np.dtype[np.int8]]
    quad_ty = np.ndarray[(CORE_ROWS * tile,), np.dtype[np.int8]]
    c_ty = np.ndarray[(TILE_M * TILE_N,), np.dtype[np.int32]]
    c_join_ty = np.ndarray[(CORE_ROWS * TILE_M * TILE_N,), np.dtype[np.int32]]
    act_ty = np.ndarray[(m_pad * row_bytes,), np.dtype[np.int8]]
    wimg_ty = np.ndarray[(n_img * block_bytes,), np.dtype[np.int8]]
    out_ty = np.ndarray[(m_pad * width,), np.dtype[np.float32]]

    zero = Kernel("zero_i32", "matmul_i8.o", [c_ty])
    matmul = Kernel("matmul_i8_i32", "matmul_i8.o", [a_ty, w_ty, c_ty])
    epilogue = Kernel("dequant_bias_act", "matmul_i8.o", [c_ty, a_ty, w_ty, np.int32])
    a_blocks = [(TILE_M // 4, 4 * TILE_K // 4), (TILE_K // 8, 2), (4, TILE_K // 4), (2, 1)]
    w_blocks = [(TILE_N // 8, 8 * TILE_K // 4), (TILE_K // 8, 2), (8, TILE_K // 4), (2, 1)]

    rows_in = {c: ObjectFifo(a_ty, name=f"rows{c}") for c in used}
    rows_l1 = {c: rows_in[c].cons().forward(placement=Tile(c, 1), dims_to_stream=a_blocks) for c in used}
    quads_in = {c: ObjectFifo(quad_ty, name=f"quads{c}") for c in used}
    tiles_l1 = {
        c: quads_in[c].cons().split(
            [j * tile for j in range(CORE_ROWS)],
            placement=Tile(c, 1),
            obj_types=[w_ty] * CORE_ROWS,
            dims_to_stream=[w_blocks] * CORE_ROWS,
        )
        for c in used
    }
    outs_l2 = {c: ObjectFifo(c_join_ty, name=f"out{c}") for c in used}
    outs_l1 = {
        c: outs_l2[c].prod().join(
            [j * TILE_M * TILE_N for j in range(CORE_ROWS)], placement=Tile(c, 1), obj_types=[c_ty] * CORE_ROWS
        )
        for c in used
    }

    def core_fn(rows, tiles, out, zero, matmul, epilogue, quads):
        mode = 1 if gelu else 0
        for _ in range_(sys.maxsize):
            for _ in range(quads):
                c = out.acquire(1)
                zero(c)
                for _ in range_(kt):
                    a = rows.acquire(1)
                    w = tiles.acquire(1)
                    matmul(a, w, c)
                    rows.release(1)
                    tiles.release(1)
                s = rows.acquire(1)
                p = tiles.acquire(1)
                epilogue(c, s, p, mode)
                rows.release(1)
                tiles.release(1)
                out.release(1)

    workers = [
        Worker(
            core_fn,
            [rows_l1[c].cons(), tiles_l1[c][j].cons(), outs_l1[c][j].prod(), zero, matmul, epilogue, quads_of[c]],
            placement=Tile(c, 2 + j),
            stack_size=0x800,
        )
        for c in used
        for j in range(CORE_ROWS)
    ]

    rt = Runtime()
    with rt.sequence(act_ty, wimg_ty, out_ty) as (act, wimg, out):
        rt.start(*workers)
        for rb in range(row_blocks):
            tg = rt.task_group()
            for c in used:
                rt.fill(
                    rows_in[c].prod(),
                    act,
                    tap=TensorAccessPattern(
                        (m_pad, row_bytes),
                        offset=rb * TILE_M * row_bytes,
                        sizes=[quads_of[c], kt + 1, TILE_M, TILE_K],
                        strides=[0, TILE_K, row_bytes, 1],
                    ),
                    placement=Tile(c, 0),
                    task_group=tg,
                )
                for g in range(quads_of[c]):
                    q = c + cols * g
                    # Per depth step, tile t of the quad's four blocks.
                    rt.fill(
                        quads_in[c].prod(),
                        wimg,
                        tap=TensorAccessPattern(
                            (n_img, block_bytes),
                            offset=CORE_ROWS * q * block_bytes,
                            sizes=[kt + 1, CORE_ROWS, 2, tile // 2],
                            strides=[tile, block_bytes, tile // 2, 1],
                        ),
                        placement=Tile(c, 0),
                        task_group=tg,
                    )
                rt.drain(
                    outs_l2[c].cons(),
                    out,
                    tap=TensorAccessPattern(
                        (m_pad, width),
                        offset=rb * TILE_M * width + c * CORE_ROWS * TILE_N,
                        sizes=[quads_of[c], CORE_ROWS, TILE_M, TILE_N],
                        strides=[cols * CORE_ROWS * TILE_N, TILE_N, width, 1],
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
    p.add_argument("-M", type=int, default=BLOCK_ROWS)
    p.add_argument("-K", type=int, required=True)
    p.add_argument("-N", type=int, required=True)
    p.add_argument("--gelu", action="store_true")
    p.add_argument("--decoder", action="store_true", help="decoder mapping (M of 1-5)")
    a = p.parse_args()
    build = gemm_i8_decoder if a.decoder else gemm_i8
    print(build(a.dev, a.M, a.K, a.N, a.gelu))
    sys.exit(0)
