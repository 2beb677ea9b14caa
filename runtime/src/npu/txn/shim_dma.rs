//! The shim-DMA interpreter: runs a validated [`Plan`] against host buffers. MM2S tasks read the
//! bytes their BD's address pattern selects (with strides, wraps and iterations) and append them
//! to their channel's input stream; the array model then turns input streams into output
//! streams; S2MM tasks scatter each output stream back through their BDs.
//!
//! Ordering model: every MM2S read happens at its push (the buffers are inputs of the command),
//! every S2MM write after the array model ran. A stream that reads, through MM2S, bytes that an
//! earlier S2MM task of the same command wrote is therefore not modelled (none of the real
//! streams does this; mlir-aie's runtime sequences read inputs and write outputs).

use std::collections::BTreeMap;

use super::error::TxnError;
use super::op::Direction;
use super::validate::{Channel, Plan, RegisterWrite, Task};

/// Host memory the shim DMAs reach: the command's buffer arguments by index. Offsets and lengths
/// passed in are inside the buffer (the validator checked every BD against [`DmaMemory::len`]).
pub trait DmaMemory {
    /// Bytes of buffer `arg`.
    fn len(&self, arg: usize) -> u64;
    /// Copy `out.len()` bytes at `offset` of buffer `arg` into `out`.
    fn read(&self, arg: usize, offset: u64, out: &mut [u8]);
    /// Copy `data` to `offset` of buffer `arg`.
    fn write(&mut self, arg: usize, offset: u64, data: &[u8]);
}

/// Buffers as byte vectors (tests, host-side replays).
impl DmaMemory for [Vec<u8>] {
    fn len(&self, arg: usize) -> u64 {
        self[arg].len() as u64
    }
    fn read(&self, arg: usize, offset: u64, out: &mut [u8]) {
        let o = offset as usize;
        out.copy_from_slice(&self[arg][o..o + out.len()]);
    }
    fn write(&mut self, arg: usize, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self[arg][o..o + data.len()].copy_from_slice(data);
    }
}

/// What the array sees of one command: the bytes arriving on each MM2S channel, room for the
/// bytes leaving on each S2MM channel, and the register writes outside the shim DMA.
#[derive(Debug, Default)]
pub struct ArrayIo {
    inputs: BTreeMap<Channel, Vec<u8>>,
    outputs: BTreeMap<Channel, Vec<u8>>,
    writes: Vec<RegisterWrite>,
}

impl ArrayIo {
    /// The bytes that arrived on MM2S channel `channel` of shim column `col`, in order.
    pub fn input(&self, col: u8, channel: u8) -> Option<&[u8]> {
        self.inputs
            .get(&Channel {
                col,
                dir: Direction::Mm2s,
                channel,
            })
            .map(|v| v.as_slice())
    }

    /// The bytes the array must send on S2MM channel `channel` of shim column `col` (zeroed;
    /// exactly as long as the S2MM tasks of that channel will write).
    pub fn output(&mut self, col: u8, channel: u8) -> Option<&mut [u8]> {
        self.outputs
            .get_mut(&Channel {
                col,
                dir: Direction::S2mm,
                channel,
            })
            .map(|v| v.as_mut_slice())
    }

    /// Sends `bytes` on S2MM channel `channel` of shim column `col`: an error names the
    /// channel when no S2MM task reads it or its tasks take another length.
    pub fn send(&mut self, col: u8, channel: u8, bytes: &[u8]) -> Result<(), String> {
        let o = self
            .output(col, channel)
            .ok_or_else(|| format!("no S2MM task on column {col} channel {channel}"))?;
        if o.len() != bytes.len() {
            return Err(format!(
                "S2MM {col}/{channel}: the tasks take {} bytes, the array made {}",
                o.len(),
                bytes.len()
            ));
        }
        o.copy_from_slice(bytes);
        Ok(())
    }

    /// Every input channel with its bytes.
    pub fn inputs(&self) -> impl Iterator<Item = (Channel, &[u8])> {
        self.inputs.iter().map(|(c, v)| (*c, v.as_slice()))
    }

    /// Every output channel with its length.
    pub fn output_channels(&self) -> impl Iterator<Item = (Channel, usize)> + '_ {
        self.outputs.iter().map(|(c, v)| (*c, v.len()))
    }

    /// Writes to core, memtile and shim non-DMA registers (run-time parameters), in order.
    pub fn register_writes(&self) -> &[RegisterWrite] {
        &self.writes
    }
}

/// What an execution moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecReport {
    /// Tasks run.
    pub tasks: usize,
    /// Bytes read from host buffers (MM2S).
    pub bytes_read: u64,
    /// Bytes written to host buffers (S2MM).
    pub bytes_written: u64,
}

/// Visit the byte ranges a task touches, in order, merging contiguous words.
fn for_each_range(task: &Task, mut f: impl FnMut(u64, usize)) {
    let bd = &task.bd;
    let mut start: Option<(u64, usize)> = None;
    for run in 0..task.runs {
        for k in 0..bd.length {
            let at = task.offset + 4 * bd.word_offset(run, k);
            start = match start {
                Some((s, n)) if s + n as u64 == at => Some((s, n + 4)),
                Some((s, n)) => {
                    f(s, n);
                    Some((at, 4))
                }
                None => Some((at, 4)),
            };
        }
    }
    if let Some((s, n)) = start {
        f(s, n);
    }
}

/// Run `plan` against `memory`: gather every MM2S stream, call `array`, scatter every S2MM
/// stream. `memory` must have at least the buffers and lengths the plan was validated with.
pub fn execute<M: DmaMemory + ?Sized>(
    plan: &Plan,
    memory: &mut M,
    array: &mut dyn FnMut(&mut ArrayIo) -> Result<(), String>,
) -> Result<ExecReport, TxnError> {
    let mut io = ArrayIo {
        writes: plan.register_writes.clone(),
        ..ArrayIo::default()
    };
    let mut report = ExecReport {
        tasks: plan.tasks.len(),
        ..ExecReport::default()
    };
    for (ch, bytes) in plan.channel_bytes() {
        let v = Vec::with_capacity(bytes as usize);
        match ch.dir {
            Direction::Mm2s => io.inputs.insert(ch, v),
            Direction::S2mm => io.outputs.insert(ch, vec![0; bytes as usize]),
        };
    }
    for task in &plan.tasks {
        let end = task.offset + 4 * (task.bd.max_word_offset(task.runs).unwrap_or(0) + 1);
        if end > memory.len(task.arg_idx) {
            return Err(TxnError::BdOutOfBounds {
                op: task.op,
                word: 0,
                col: task.channel.col,
                bd: task.bd_id,
                arg_idx: task.arg_idx,
                first: task.offset,
                end,
                len: memory.len(task.arg_idx),
            });
        }
        if task.channel.dir == Direction::Mm2s {
            let stream = io.inputs.get_mut(&task.channel).expect("allocated above");
            for_each_range(task, |at, n| {
                let s = stream.len();
                stream.resize(s + n, 0);
                memory.read(task.arg_idx, at, &mut stream[s..]);
                report.bytes_read += n as u64;
            });
        }
    }
    array(&mut io).map_err(TxnError::Array)?;
    let mut cursor: BTreeMap<Channel, usize> = BTreeMap::new();
    for task in plan
        .tasks
        .iter()
        .filter(|t| t.channel.dir == Direction::S2mm)
    {
        let stream = &io.outputs[&task.channel];
        let pos = cursor.entry(task.channel).or_insert(0);
        for_each_range(task, |at, n| {
            memory.write(task.arg_idx, at, &stream[*pos..*pos + n]);
            *pos += n;
            report.bytes_written += n as u64;
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_fills_an_output_of_its_length_and_names_the_channel_otherwise() {
        let mut io = ArrayIo::default();
        let s2mm = |col, channel| Channel {
            col,
            dir: Direction::S2mm,
            channel,
        };
        io.outputs.insert(s2mm(1, 0), vec![0; 4]);
        io.send(1, 0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(io.output(1, 0).unwrap(), &[1, 2, 3, 4]);
        assert_eq!(
            io.send(1, 0, &[9; 3]).unwrap_err(),
            "S2MM 1/0: the tasks take 4 bytes, the array made 3"
        );
        assert_eq!(io.output(1, 0).unwrap(), &[1, 2, 3, 4], "left as it was");
        assert_eq!(
            io.send(2, 1, &[0; 4]).unwrap_err(),
            "no S2MM task on column 2 channel 1"
        );
    }
}
