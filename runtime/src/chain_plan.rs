//! Which device linears of a stage go into one submission: a device backend's plan, made once
//! per stage at workspace creation, for [`crate::npu::ert::CmdChain`] submissions.
//!
//! A group starts at the first device linear not yet in a group and takes every later device
//! linear of the same hardware context whose input buffer no op in between writes (host ops,
//! other groups' members, the group's own earlier members: their results land in the stage's
//! buffers at their own positions), up to the chain's limits. The whole group is submitted at
//! the position of its first member, its sub-commands in program order; each member's result
//! is written back at the member's own position. So every op sees the buffers exactly as when
//! the stage runs op by op: a member's input is final when the group starts (nothing between
//! writes it), and results are written in program order. Buffers are compared whole
//! (conservative): a member is never hoisted over a write to any part of its input buffer.
//!
//! Nothing here knows which network or device it plans for: the backend says which ops are
//! device linears, of which context, at what cost.

use crate::stage::{BufferId, Op};

/// What a device linear costs a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLinear {
    /// The hardware context it runs on (a chain's sub-commands share one).
    pub context: usize,
    /// Sub-commands it needs at its most rows.
    pub commands: usize,
    /// Device bytes of its inputs and outputs at its most rows (the group's buffers hold the
    /// sum over its members).
    pub bytes: usize,
}

/// Limits of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most sub-commands in one submission.
    pub commands: usize,
    /// Most device bytes of one group's members together.
    pub bytes: usize,
}

/// One submission: ops of a stage, in program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The context all members run on.
    pub context: usize,
    /// Op indices of the members, ascending.
    pub members: Vec<usize>,
    /// Sub-commands at the members' most rows.
    pub commands: usize,
    /// Device bytes at the members' most rows.
    pub bytes: usize,
}

/// The groups of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainPlan {
    /// In order of their first member.
    pub groups: Vec<Group>,
    /// Per op: the group that starts (is submitted) at it.
    pub starts: Vec<Option<u32>>,
    /// Per op: its (group, member index) when it is a member.
    pub member: Vec<Option<(u32, u32)>>,
}

impl ChainPlan {
    /// Plans `ops`: `device(i, op)` says whether op `i` is a device linear and what it costs
    /// (only [`Op::Linear`] ops are asked).
    pub fn new(
        ops: &[Op],
        device: impl Fn(usize, &Op) -> Option<DeviceLinear>,
        limits: Limits,
    ) -> Self {
        let n = ops.len();
        let linear: Vec<Option<(DeviceLinear, BufferId)>> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Linear { x, .. } => device(i, op).map(|d| (d, x.buffer)),
                _ => None,
            })
            .collect();
        let mut plan = ChainPlan {
            groups: Vec::new(),
            starts: vec![None; n],
            member: vec![None; n],
        };
        let mut written: Vec<BufferId> = Vec::new();
        for i in 0..n {
            let Some((d, _)) = linear[i] else { continue };
            if plan.member[i].is_some() {
                continue;
            }
            let g = plan.groups.len() as u32;
            let mut group = Group {
                context: d.context,
                members: vec![i],
                commands: d.commands,
                bytes: d.bytes,
            };
            plan.member[i] = Some((g, 0));
            written.clear();
            written.extend(ops[i].writes());
            for j in i + 1..n {
                if let Some((dj, x)) = linear[j] {
                    if plan.member[j].is_none()
                        && dj.context == d.context
                        && !written.contains(&x)
                        && group.commands + dj.commands <= limits.commands
                        && group.bytes + dj.bytes <= limits.bytes
                    {
                        plan.member[j] = Some((g, group.members.len() as u32));
                        group.members.push(j);
                        group.commands += dj.commands;
                        group.bytes += dj.bytes;
                    }
                }
                for b in ops[j].writes() {
                    if !written.contains(&b) {
                        written.push(b);
                    }
                }
            }
            plan.starts[i] = Some(g);
            plan.groups.push(group);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Epilogue;
    use crate::stage::{At, Extent, MatrixId};

    fn linear(x: u16, out: u16, w: u16) -> Op {
        Op::Linear {
            x: At::start(BufferId(x)),
            out: At::start(BufferId(out)),
            rows: Extent::rows(1),
            max_rows: 8,
            w: MatrixId(w),
            bias: None,
            epilogue: Epilogue::Store,
        }
    }

    fn norm(x: u16, out: u16) -> Op {
        Op::LayerNorm {
            x: At::start(BufferId(x)),
            out: At::start(BufferId(out)),
            rows: Extent::rows(1),
            gamma: crate::stage::VectorId(0),
            beta: crate::stage::VectorId(0),
            eps: 1e-5,
        }
    }

    const LIMITS: Limits = Limits {
        commands: 78,
        bytes: usize::MAX,
    };

    /// Every linear on context 0 (matrix 9: on the host), one command, 100 bytes.
    fn plan(ops: &[Op], limits: Limits) -> Vec<Vec<usize>> {
        let p = ChainPlan::new(
            ops,
            |_, op| match op {
                Op::Linear { w, .. } if w.0 != 9 => Some(DeviceLinear {
                    context: usize::from(w.0 == 7),
                    commands: 1,
                    bytes: 100,
                }),
                _ => None,
            },
            limits,
        );
        for (g, group) in p.groups.iter().enumerate() {
            assert_eq!(p.starts[group.members[0]], Some(g as u32));
            for (m, &op) in group.members.iter().enumerate() {
                assert_eq!(p.member[op], Some((g as u32, m as u32)));
            }
        }
        p.groups.into_iter().map(|g| g.members).collect()
    }

    #[test]
    fn projections_of_one_input_share_a_submission() {
        // norm h; q, k, v of h; attention-like host op writes a; out of a.
        let ops = [
            norm(0, 1),
            linear(1, 2, 0),
            linear(1, 3, 1),
            linear(1, 4, 2),
            norm(2, 5),
            linear(5, 0, 3),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![1, 2, 3], vec![5]]);
    }

    #[test]
    fn a_member_never_reads_what_an_earlier_op_of_its_group_span_writes() {
        // fc1 chunks read h, write hidden; fc2 chunks read hidden: every fc1 hoists into the
        // first group, each fc2 waits for its fc1's result.
        let ops = [
            linear(1, 2, 0),
            linear(2, 0, 1),
            linear(1, 2, 0),
            linear(2, 0, 1),
            linear(1, 2, 0),
            linear(2, 0, 1),
        ];
        assert_eq!(
            plan(&ops, LIMITS),
            vec![vec![0, 2, 4], vec![1], vec![3], vec![5]]
        );
        // Across host ops that do not touch the input: cross-attention K/V of every layer.
        let ops = [
            linear(1, 2, 0),
            linear(1, 3, 1),
            norm(2, 4),
            linear(1, 2, 2),
            linear(1, 3, 3),
            norm(2, 4),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 1, 3, 4]]);
        // A host op writing the input stops the hoisting.
        let ops = [linear(1, 2, 0), norm(3, 1), linear(1, 4, 1)];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0], vec![2]]);
    }

    #[test]
    fn contexts_host_linears_and_limits_split_groups() {
        // Matrix 7 runs on another context, matrix 9 on the host (writes buffer 1).
        let ops = [
            linear(0, 2, 0),
            linear(0, 3, 7),
            linear(0, 4, 1),
            linear(0, 1, 9),
            linear(1, 5, 2),
            linear(0, 6, 7),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 2], vec![1, 5], vec![4]]);
        let ops: Vec<Op> = (0..5).map(|i| linear(0, 1 + i, i)).collect();
        let two = Limits {
            commands: 2,
            bytes: usize::MAX,
        };
        assert_eq!(plan(&ops, two), vec![vec![0, 1], vec![2, 3], vec![4]]);
        let bytes = Limits {
            commands: 78,
            bytes: 300,
        };
        assert_eq!(plan(&ops, bytes), vec![vec![0, 1, 2], vec![3, 4]]);
    }
}
