//! Prints the dispatch budget of Whisper tiny/base through the aie/ designs: per 30 s window
//! and per token, submissions, bytes to and from the device, and a projected time on Phoenix
//! and Strix (a projection from published peaks: nothing here has run on an NPU).
//!
//! `cargo run --release -p amanuensis-aie --example dispatch_budget`

use amanuensis_aie::budget::{
    cross_kv, decoder_step, encoder, report, resident_weight_bytes, Assumptions, Chaining, PHOENIX,
    STRIX,
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
            "the same, vectorised softmax (2 cycles/score)",
            Assumptions {
                self_attention_on_device: false,
                softmax_cycles_per_score: 2.0,
                ..d
            },
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
            "per-layer chains, greedy, peak, vectorised softmax (2 cycles/score)",
            Assumptions {
                softmax_cycles_per_score: 2.0,
                ..per_layer
            },
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
    for w in models {
        println!(
            "{}: weight images uploaded once: {:.1} MB",
            w.name,
            resident_weight_bytes(&w) as f64 / 1e6
        );
    }
}
