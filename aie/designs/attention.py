# Attention of one layer (all heads) as an IRON (mlir-aie) design: int8 Q.K^T with i32 sums,
# softmax in f32 normalised before narrowing to bf16, bf16 P.V with f32 accumulation.
#
# NOT RUN: no machine we reach has mlir-aie or Peano, and none has an NPU. `aie/build.sh`
# compiles this where they are installed. Tested here instead: the kernels
# (aie/kernels/attention.cc == aie/src/kernels/attention.rs bit for bit, tests/host_build.rs),
# the accuracy of the whole computation against f64 attention (attention.rs tests), and the
# memory budgets (aie/src/design.rs, AttentionDesign). No Rust TXN generator for this design
# yet (the GEMM's is in aie/src/program/gemm.rs).
#
# Inputs (runtime sequence buffers):
#   q   per head, per group of 4 queries: 4 x 64 int8 codes, then 4 f32 row scales that already
#       include head_dim^-1/2, then 4 i32 key limits (causal rows: position + 1; padding rows: 0)
#   k   per head, per chunk of 32 keys: 32 x 64 int8 codes, then 32 f32 key scales
#   v   per head, per chunk of 32 keys: 32 x 64 bf16
#   out per head, per query: 64 f32
#
# Encoder (1500 queries x 1500 keys per head): column c takes heads c, c + cols, ...; memory
# tile c loads one head's K and V whole (47 chunks: 47 x 2176 + 47 x 4096 = 295 KB of its
# 512 KB), then replays them to its four cores once per round, while each core takes its own
# group of 4 queries (16 queries per column per round, 94 rounds per head). DDR reads K/V once
# per head. Decoder (1-5 queries; self-attention up to 448 keys, cross-attention 1500 keys):
# --decoder maps one head per core (column c, row j -> head cols*j + c), 1-2 query groups each,
# and the memory tile forwards K/V chunks to each core without keeping them.
#
# Usage: python3 attention.py --dev npu1 --heads 8 --queries 1500 --keys 1500 > attention.mlir
import argparse
import sys

import numpy as np
from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
from aie.iron.controlflow import range_
from aie.iron.device import NPU1, NPU2, Tile
from aie.iron.placers import SequentialPlacer
from aie.helpers.taplib import TensorAccessPattern

Q_ROWS, HEAD_DIM, KEY_CHUNK, MAX_KEYS = 4, 64, 32, 1536
CORE_ROWS = 4
Q_OBJ = Q_ROWS * HEAD_DIM + Q_ROWS * 4 + Q_ROWS * 4  # codes, scales, limits
K_OBJ = KEY_CHUNK * HEAD_DIM + KEY_CHUNK * 4  # codes, scales
V_OBJ = KEY_CHUNK * HEAD_DIM  # bf16 elements


def attention(dev_name, heads, queries, keys, decoder):
    dev, cols = (NPU1(), 4) if dev_name == "npu1" else (NPU2(), 8)
    assert keys <= MAX_KEYS
    chunks = (keys + KEY_CHUNK - 1) // KEY_CHUNK
    groups = (queries + Q_ROWS - 1) // Q_ROWS

    q_ty = np.ndarray[(Q_OBJ,), np.dtype[np.int8]]
    k_ty = np.ndarray[(K_OBJ,), np.dtype[np.int8]]
    v_ty = np.ndarray[(V_OBJ,), np.dtype[np.uint16]]
    o_ty = np.ndarray[(Q_ROWS * HEAD_DIM,), np.dtype[np.float32]]
    s_ty = np.ndarray[(Q_ROWS * MAX_KEYS,), np.dtype[np.float32]]
    p_ty = np.ndarray[(Q_ROWS * MAX_KEYS,), np.dtype[np.uint16]]

    scores = Kernel("attn_scores_obj", "attention.o", [q_ty, k_ty, np.int32, s_ty])
    softmax = Kernel("attn_softmax_obj", "attention.o", [s_ty, q_ty, np.int32, p_ty])
    pv = Kernel("attn_pv_bf16", "attention.o", [p_ty, v_ty, np.int32, o_ty])

    # Per column: K and V from shim MM2S 0 / 1 through memory tile c to the 4 cores; Q per core
    # through the memory tile (split 4 ways); outputs joined 4 -> 1 back through it.
    k_in = [ObjectFifo(k_ty, name=f"k{c}", depth=2) for c in range(cols)]
    v_in = [ObjectFifo(v_ty, name=f"v{c}", depth=2) for c in range(cols)]
    if decoder:
        k_l1 = [[k_in[c].cons().forward(placement=Tile(c, 1), name=f"k{c}_{j}") for j in range(CORE_ROWS)] for c in range(cols)]
        v_l1 = [[v_in[c].cons().forward(placement=Tile(c, 1), name=f"v{c}_{j}") for j in range(CORE_ROWS)] for c in range(cols)]
    else:
        # Whole head resident in L2: depth = chunks, replayed once per round.
        k_l2 = [k_in[c].cons().forward(placement=Tile(c, 1), depth=chunks, name=f"k{c}_l2") for c in range(cols)]
        v_l2 = [v_in[c].cons().forward(placement=Tile(c, 1), depth=chunks, name=f"v{c}_l2") for c in range(cols)]
        k_l1 = [[k_l2[c]] * CORE_ROWS for c in range(cols)]
        v_l1 = [[v_l2[c]] * CORE_ROWS for c in range(cols)]
    q_in = [ObjectFifo(np.ndarray[(CORE_ROWS * Q_OBJ,), np.dtype[np.int8]], name=f"q{c}") for c in range(cols)]
    q_l1 = [q_in[c].cons().split([j * Q_OBJ for j in range(CORE_ROWS)], placement=Tile(c, 1), obj_types=[q_ty] * CORE_ROWS) for c in range(cols)]
    o_l2 = [ObjectFifo(np.ndarray[(CORE_ROWS * Q_ROWS * HEAD_DIM,), np.dtype[np.float32]], name=f"o{c}") for c in range(cols)]
    o_l1 = [o_l2[c].prod().join([j * Q_ROWS * HEAD_DIM for j in range(CORE_ROWS)], placement=Tile(c, 1), obj_types=[o_ty] * CORE_ROWS) for c in range(cols)]

    def core_fn(q, k, v, o, s_buf, p_buf, scores, softmax, pv):
        for _ in range_(sys.maxsize):
            qo = q.acquire(1)
            for c in range_(chunks):
                ko = k.acquire(1)
                scores(qo, ko, c * KEY_CHUNK, s_buf)
                k.release(1)
            softmax(s_buf, qo, chunks * KEY_CHUNK, p_buf)
            oo = o.acquire(1)
            for c in range_(chunks):
                vo = v.acquire(1)
                pv(p_buf, vo, c * KEY_CHUNK, oo)
                v.release(1)
            o.release(1)
            q.release(1)

    from aie.iron import LocalBuffer

    workers = []
    for c in range(cols):
        for j in range(CORE_ROWS):
            s_buf = LocalBuffer(s_ty, name=f"scores_{c}_{j}")
            p_buf = LocalBuffer(p_ty, name=f"p_{c}_{j}")
            workers.append(
                Worker(
                    core_fn,
                    [q_l1[c][j].cons(), k_l1[c][j].cons(), v_l1[c][j].cons(), o_l1[c][j].prod(), s_buf, p_buf, scores, softmax, pv],
                    placement=Tile(c, 2 + j),
                    stack_size=0x800,
                )
            )

    q_all = np.ndarray[(heads * groups * Q_OBJ,), np.dtype[np.int8]]
    k_all = np.ndarray[(heads * chunks * K_OBJ,), np.dtype[np.int8]]
    v_all = np.ndarray[(heads * chunks * V_OBJ,), np.dtype[np.uint16]]
    o_all = np.ndarray[(heads * groups * Q_ROWS * HEAD_DIM,), np.dtype[np.float32]]
    rt = Runtime()
    with rt.sequence(q_all, k_all, v_all, o_all) as (qb, kb, vb, ob):
        rt.start(*workers)
        for h0 in range(0, heads, cols):
            tg = rt.task_group()
            for c in range(min(cols, heads - h0)):
                h = h0 + c
                rounds = (groups + CORE_ROWS - 1) // CORE_ROWS
                rt.fill(k_in[c].prod(), kb, tap=TensorAccessPattern((heads * chunks, K_OBJ), h * chunks * K_OBJ, [1, 1, chunks, K_OBJ], [0, 0, K_OBJ, 1]), placement=Tile(c, 0), task_group=tg)
                rt.fill(v_in[c].prod(), vb, tap=TensorAccessPattern((heads * chunks, V_OBJ), h * chunks * V_OBJ, [1, 1, chunks, V_OBJ], [0, 0, V_OBJ, 1]), placement=Tile(c, 0), task_group=tg)
                rt.fill(q_in[c].prod(), qb, tap=TensorAccessPattern((heads * groups, Q_OBJ), h * groups * Q_OBJ, [1, 1, rounds * CORE_ROWS, Q_OBJ], [0, 0, Q_OBJ, 1]), placement=Tile(c, 0), task_group=tg)
                rt.drain(o_l2[c].cons(), ob, tap=TensorAccessPattern((heads * groups, Q_ROWS * HEAD_DIM), h * groups * Q_ROWS * HEAD_DIM, [1, 1, rounds * CORE_ROWS, Q_ROWS * HEAD_DIM], [0, 0, Q_ROWS * HEAD_DIM, 1]), placement=Tile(c, 0), wait=True, task_group=tg)
            rt.finish_task_group(tg)
    return Program(dev, rt).resolve_program(SequentialPlacer())


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--dev", choices=["npu1", "npu2"], default="npu1")
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--queries", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--decoder", action="store_true")
    a = p.parse_args()
    print(attention(a.dev, a.heads, a.queries, a.keys, a.decoder))
    sys.exit(0)
