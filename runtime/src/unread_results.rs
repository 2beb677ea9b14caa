//! Which chain members' results no host op reads, so a device backend need not read them back.
//!
//! A member's result lands in the device's output region; the backend reads it back and
//! writes it into the stage's buffer at the member's position ([`crate::chain_plan`]), so
//! that every op sees the buffers as when the stage runs op by op. Many results are read only
//! on the device: a layer's q, k and v (the member attention's inputs step reads them), the
//! attention's rows (the out-projection's device quantize), fc1's rows (fc2's). Reading those
//! back is bytes over the bus and cache-line invalidations for nothing.
//!
//! A stored result of member `j` (a linear that stores or applies GELU, or an attention;
//! never an `AddInto` linear, whose sum the host makes, nor a norm, whose f32 output is never
//! read back) into buffer `b` is **unread** when, walking the ops after `j`:
//! - every op reading `b` reads, on the device, the result of the last op that wrote `b` (a
//!   device quantize of it, a member attention's inputs step, a member linear reading a member
//!   norm's image), until
//! - an op overwrites exactly `j`'s rows (same position, same rows, same width): then
//!   nothing can read `j`'s result any more;
//! - and when the stage ends first, `b` is a stage's scratch (nothing reads it between
//!   stages).
//!
//! Anything else (a host op reading `b`, a partial overwrite followed by a host read, a buffer
//! the caller reads after the stage) keeps the result read back.

use crate::chain_plan::ChainPlan;
use crate::cpu::Epilogue;
use crate::stage::{At, BufferId, Extent, Op};

/// Where an op stores its result: position, rows, values per row. `None` for ops that add
/// into their output or write no buffer.
fn stored(op: &Op, width: &impl Fn(&Op) -> Option<usize>) -> Option<(At, Extent, usize)> {
    let (out, rows) = match op {
        Op::Linear {
            out,
            rows,
            epilogue,
            ..
        } if *epilogue != Epilogue::AddInto => (*out, *rows),
        Op::LayerNorm { out, rows, .. } => (*out, *rows),
        Op::Attention { out, dims, .. }
        | Op::AttentionPrepared { out, dims, .. }
        | Op::CachedSelfAttention { out, dims, .. }
        | Op::SlotSelfAttention { out, dims, .. } => (*out, dims.q_len),
        _ => return None,
    };
    Some((out, rows, width(op)?))
}

/// Whether op `k` reads the result of op `w` in buffer `b` on the device only (not from the
/// host's buffer).
fn reads_on_device(ops: &[Op], plan: &ChainPlan, k: usize, w: usize, b: BufferId) -> bool {
    // A cached self-attention's new K/V rows are also copied into the host's cache (an op the
    // device leaves to the host finds the same history): a host read.
    if let Op::CachedSelfAttention { k_new, v_new, .. }
    | Op::SlotSelfAttention { k_new, v_new, .. } = &ops[k]
    {
        if k_new.buffer == b || v_new.buffer == b {
            return false;
        }
    }
    plan.quantized[k] == Some(w)
        || plan.attention[k].is_some_and(|a| a.contains(w))
        || plan.image_of[k].is_some_and(|(n, _)| n == w)
}

/// Per op of `ops`: a member of `plan` whose stored result no host op reads (see the module
/// doc). `width(op)` is the values per row of an op's result (a linear's output channels, a
/// norm's width, an attention's `heads · head_dim`); `stage_local(b)`: buffer `b` is a stage's
/// scratch.
pub fn unread_results(
    ops: &[Op],
    plan: &ChainPlan,
    width: impl Fn(&Op) -> Option<usize>,
    stage_local: impl Fn(BufferId) -> bool,
) -> Vec<bool> {
    (0..ops.len())
        .map(|j| {
            let member_result = plan.member[j].is_some()
                && plan.norms[j].is_none()
                && matches!(
                    ops[j],
                    Op::Linear { .. } | Op::Attention { .. } | Op::AttentionPrepared { .. }
                );
            let Some(mine) = stored(&ops[j], &width).filter(|_| member_result) else {
                return false;
            };
            let b = mine.0.buffer;
            let mut last = j;
            for (k, op) in ops.iter().enumerate().skip(j + 1) {
                if op.reads().any(|r| r == b) && !reads_on_device(ops, plan, k, last, b) {
                    return false;
                }
                if op.writes().any(|w| w == b) {
                    if stored(op, &width) == Some(mine) {
                        return true;
                    }
                    last = k;
                }
            }
            stage_local(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_plan::{AttentionInputs, Group};
    use crate::stage::{MatrixId, VectorId};

    const D: usize = 8;

    fn lin(x: BufferId, out: BufferId, epilogue: Epilogue) -> Op {
        Op::Linear {
            x: At::start(x),
            out: At::start(out),
            rows: Extent::rows(1),
            max_rows: 4,
            w: MatrixId(0),
            bias: None,
            epilogue,
        }
    }

    fn norm(x: BufferId, out: BufferId) -> Op {
        Op::LayerNorm {
            x: At::start(x),
            out: At::start(out),
            rows: Extent::rows(1),
            gamma: VectorId(0),
            beta: VectorId(1),
            eps: 1e-5,
        }
    }

    /// A plan with every op in `members` a member of one group, fc2-style quantized reads
    /// `quantized`, and norms `norms`.
    fn plan(
        n: usize,
        members: &[usize],
        quantized: &[(usize, usize)],
        norms: &[usize],
    ) -> ChainPlan {
        let mut p = ChainPlan {
            groups: vec![Group {
                context: 0,
                members: members.to_vec(),
                commands: members.len(),
                bytes: 0,
                slot_bytes: 0,
            }],
            starts: vec![None; n],
            member: vec![None; n],
            norms: vec![None; n],
            image_of: vec![None; n],
            quantized: vec![None; n],
            residual_of: vec![None; n],
            attention: vec![None; n],
        };
        for (m, &i) in members.iter().enumerate() {
            p.member[i] = Some((0, m as u32));
        }
        for &(k, w) in quantized {
            p.quantized[k] = Some(w);
        }
        for &i in norms {
            p.norms[i] = Some(crate::chain_plan::NormMember {
                residual: None,
                residual_parts: 0,
                max_rows: 4,
                x_from: None,
                x_writes: 0,
            });
        }
        p
    }

    const X: BufferId = BufferId(0);
    const H: BufferId = BufferId(1);
    const HIDDEN: BufferId = BufferId(2);
    const Q: BufferId = BufferId(3);

    fn width(_: &Op) -> Option<usize> {
        Some(D)
    }

    /// fc1 → fc2 through the device quantize: fc1's result is unread when its buffer is the
    /// stage's scratch or a later fc1 overwrites it, read when a host op reads it or the caller
    /// may read it after the stage; fc2 (`AddInto`) always read.
    #[test]
    fn a_result_only_the_device_reads_is_unread() {
        let ops = [
            lin(H, HIDDEN, Epilogue::Gelu),
            lin(HIDDEN, X, Epilogue::AddInto),
        ];
        let p = plan(2, &[0, 1], &[(1, 0)], &[]);
        assert_eq!(unread_results(&ops, &p, width, |_| true), [true, false]);
        assert_eq!(unread_results(&ops, &p, width, |_| false), [false, false]);

        // A second chunk overwrites the same rows: the first is unread even if not scratch.
        let ops2 = [
            ops[0].clone(),
            ops[1].clone(),
            ops[0].clone(),
            ops[1].clone(),
        ];
        let p2 = plan(4, &[0, 1, 2, 3], &[(1, 0), (3, 2)], &[]);
        assert_eq!(
            unread_results(&ops2, &p2, width, |_| false),
            [true, false, false, false]
        );

        // A host op reads hidden before it is overwritten: read back.
        let ops3 = [
            ops[0].clone(),
            ops[1].clone(),
            norm(HIDDEN, Q),
            ops[0].clone(),
        ];
        let p3 = plan(4, &[0, 1, 3], &[(1, 0)], &[]);
        assert_eq!(
            unread_results(&ops3, &p3, width, |_| true),
            [false, false, false, true]
        );

        // Not a member: never unread.
        let p4 = plan(2, &[1], &[], &[]);
        assert_eq!(unread_results(&ops, &p4, width, |_| true), [false, false]);
    }

    /// A member attention's q/k/v are read by its inputs step; its own rows by the
    /// out-projection's quantize; the norm that overwrites h ends the attention's result, and
    /// a member linear reading the norm's image reads on the device.
    #[test]
    fn attention_inputs_and_rows_read_on_the_device_are_unread() {
        let dims = crate::stage::AttentionDims {
            heads: 1,
            head_dim: D,
            q_len: Extent::rows(1),
            kv_len: Extent::rows(1),
            causal_offset: None,
            max_q_len: 4,
            max_kv_len: 4,
        };
        let (k, v) = (BufferId(4), BufferId(5));
        let ops = [
            norm(X, H),
            lin(H, Q, Epilogue::Store),
            lin(H, k, Epilogue::Store),
            lin(H, v, Epilogue::Store),
            Op::Attention {
                q: At::start(Q),
                k: At::start(k),
                v: At::start(v),
                out: At::start(H),
                dims,
            },
            lin(H, X, Epilogue::AddInto),
            norm(X, H),
            lin(H, HIDDEN, Epilogue::Store),
        ];
        let mut p = plan(8, &[0, 1, 2, 3, 4, 5, 6, 7], &[(5, 4)], &[0, 6]);
        p.attention[4] = Some(AttentionInputs {
            q: 1,
            kv: Some((2, 3)),
        });
        for (i, n) in [(1, 0), (2, 0), (3, 0), (7, 6)] {
            p.image_of[i] = Some((n, 0));
        }
        let local = |b: BufferId| ![X, H, HIDDEN].contains(&b);
        let got = unread_results(&ops, &p, width, local);
        assert_eq!(
            got,
            [false, true, true, true, true, false, false, false],
            "q, k, v and the attention unread; hidden is not scratch here"
        );
        // The attention's width differs from the norm's: the norm does not cover its rows.
        let narrow = |op: &Op| {
            Some(if matches!(op, Op::Attention { .. }) {
                D / 2
            } else {
                D
            })
        };
        assert!(!unread_results(&ops, &p, narrow, local)[4]);
    }
}
