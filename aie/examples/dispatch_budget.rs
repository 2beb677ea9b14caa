//! Prints the dispatch budget of Whisper tiny/base through the aie/ designs: per 30 s window
//! and per token, submissions, bytes to and from the device, and a projected time on Phoenix
//! and Strix (a projection from published peaks: nothing here has run on an NPU).
//!
//! `cargo run --release -p amanuensis-aie --example dispatch_budget`

use amanuensis_aie::budget::{
    cross_kv, cross_kv_ops, decoder_ops, decoder_step, encoder, encoder_ops, report,
    resident_weight_bytes, window, Assumptions, Chaining, Design, StageOp, NORM_OPS, PHOENIX,
    SOFTMAX_OPS, STRIX,
};
use amanuensis_aie::design::{BASE, TINY};

fn main() {
    let models = [TINY, BASE];
    let platforms = [PHOENIX, STRIX];
    let d = Assumptions::default();
    let per_layer = Assumptions {
        chaining: Chaining::PerLayer,
        ..d
    };
    // The kernels before their vectorisation: a scalar softmax assumed at 40 cycles per score
    // (pass 1's scaling not counted, nor any per-row cost), the norm at 12 per element.
    let scalar = |a: Assumptions| Assumptions {
        softmax_cycles_per_score: 40.0,
        softmax_cycles_per_row: 0.0,
        norm_cycles_per_element: 12.0,
        norm_cycles_per_row: 0.0,
        ..a
    };
    // f32 multiplies at the 'safe' (0 ulp) 9 issues instead of the default 'fast' 6.
    let safe = |a: Assumptions| Assumptions {
        softmax_cycles_per_score: SOFTMAX_OPS.cycles_per_lane(9.0),
        norm_cycles_per_element: NORM_OPS.cycles_per_lane(9.0),
        ..a
    };
    for (label, a) in [
        (
            "one submission per op (before command chains), greedy, peak",
            Assumptions {
                chaining: Chaining::PerOp,
                ..d
            },
        ),
        (
            "chains as built today (the runtime's chain rule), greedy, peak",
            d,
        ),
        (
            "chains as built, encoder + cross attention on the device, decoder self-attention on the host (not counted; the split before the device K/V cache), greedy, peak",
            Assumptions {
                self_attention_on_device: false,
                ..d
            },
        ),
        (
            "the same, the scalar softmax and norm rounding before (40 / 12 cycles assumed)",
            scalar(Assumptions {
                self_attention_on_device: false,
                ..d
            }),
        ),
        (
            "one chain per encoder layer / decoder step (issue 14's target), greedy, peak",
            per_layer,
        ),
        (
            "per-layer chains, 20 us per sub-command and per design switch (assumed), greedy, peak",
            Assumptions {
                subcommand_s: 20e-6,
                reconfiguration_s: 20e-6,
                ..per_layer
            },
        ),
        (
            "per-layer chains, greedy, 30 % of peak",
            Assumptions {
                efficiency: 0.3,
                ..per_layer
            },
        ),
        (
            "per-layer chains, greedy, peak, the scalar softmax and norm rounding before (40 / 12 cycles assumed)",
            scalar(per_layer),
        ),
        (
            "per-layer chains, greedy, peak, f32 multiplies at the 'safe' 9 issues",
            safe(per_layer),
        ),
        (
            "per-layer chains, beam 5, peak",
            Assumptions {
                beams: 5,
                ..per_layer
            },
        ),
    ] {
        println!("== {label}");
        print!("{}", report(&models, &platforms, &a));
    }
    for (name, a) in [("as built", d), ("per layer", per_layer)] {
        println!(
        "== split of the greedy-peak window, chains {name} (projected s: encoder, cross K/V, 120 decoder steps)"
    );
        for w in models {
            for p in platforms {
                let (e, x, d) = (
                    encoder(&p, &a, &w),
                    cross_kv(&p, &a, &w),
                    decoder_step(&p, &a, &w) * 120,
                );
                println!(
                "{} | {} | encoder {:.3} ({} submissions) | cross K/V {:.3} | decoder {:.3} (overhead {:.3})",
                w.name, p.name, e.projected_s, e.submissions, x.projected_s, d.projected_s, d.overhead_s
            );
            }
        }
    }
    println!(
        "== where the per-layer greedy-peak window goes (projected s: device time by design, then dispatch overhead)"
    );
    for w in models {
        for p in platforms {
            let a = per_layer;
            let device = |ops: &[StageOp], keep: &dyn Fn(Design) -> bool| -> f64 {
                ops.iter()
                    .filter_map(|o| o.device)
                    .filter(|&(_, d)| keep(d))
                    .map(|(t, _)| t.projected_s - t.overhead_s)
                    .sum()
            };
            let (enc, _) = encoder_ops(&p, &a, &w, true);
            let (dec, _) = decoder_ops(&p, &a, &w, true);
            let xkv = cross_kv_ops(&p, &a, &w);
            let steps = a.tokens_per_window as f64;
            let part = |keep: &dyn Fn(Design) -> bool| {
                (
                    device(&enc, keep) + device(&xkv, keep),
                    device(&dec, keep) * steps,
                )
            };
            let gemm = part(&|d| matches!(d, Design::Gemm(..)));
            let att = part(&|d| d == Design::Attention);
            let norm = part(&|d| matches!(d, Design::NormQuant(..)));
            let total = window(&p, &a, &w);
            println!(
                "{} | {} | GEMMs {:.3} + {:.3} | attention {:.3} + {:.3} | norms {:.3} + {:.3} (encoder and cross K/V + decoder) | overhead {:.3} | total {:.3} = {:.0}x",
                w.name,
                p.name,
                gemm.0,
                gemm.1,
                att.0,
                att.1,
                norm.0,
                norm.1,
                total.overhead_s,
                total.projected_s,
                30.0 / total.projected_s
            );
        }
    }
    for w in models {
        println!(
            "{}: weight images uploaded once: {:.1} MB",
            w.name,
            resident_weight_bytes(&w) as f64 / 1e6
        );
    }
}
