//! The hot paths allocate nothing after warm-up: an encoder window, and each decoded token.
//! A counting global allocator sees every allocation of every thread (the pool's workers too).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, Timings, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::backend::Backend;
use amanuensis::runtime::cpu_backend::CpuBackend;
use amanuensis::runtime::cpu_int8_backend::CpuInt8Backend;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn no_allocation_per_encoder_window_or_decoded_token_after_warm_up() {
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let f32_model = Arc::new(Whisper::load(&path, CpuBackend::new(2)).unwrap());
    let path = resolve_model(Some("tiny.en.int8")).unwrap_or_else(|e| panic!("{e}"));
    let int8_model = Arc::new(Whisper::load(&path, CpuInt8Backend::new(2)).unwrap());
    // Greedy, and beam search (5 beams: batched decoder passes, cache-slot copies).
    for beam_size in [1, 5] {
        check(Arc::clone(&f32_model), beam_size);
        check(Arc::clone(&int8_model), beam_size);
    }
}

fn check<B: Backend>(model: Arc<Whisper<B>>, beam_size: usize) {
    // Two sessions on the one model, taking turns: each allocates nothing after its own first
    // window, whatever the other did in between.
    let mut sessions = [
        Session::new(Arc::clone(&model)).unwrap(),
        Session::new(Arc::clone(&model)).unwrap(),
    ];
    let opts = TranscribeOptions {
        beam_size,
        ..Default::default()
    };
    let sot = model.sot_sequence("en").unwrap();

    // Decoded token counts differ between the files; allocations must not.
    let mut per_window = Vec::new();
    for (round, file) in [
        "jfk.wav",
        "jfk.wav",
        "lj-LJ001-0002.wav",
        "lj-LJ001-0002.wav",
        "ls-1089-134686-0000.wav",
        "ls-1089-134686-0000.wav",
    ]
    .iter()
    .enumerate()
    {
        let audio = load_wav(&common::speech(file)).unwrap();
        let mel = model.mel.compute(&audio);
        let mut window = vec![0.0; mel.n_mels * 3000];
        mel.window(0, &mut window).unwrap();

        let session = &mut sessions[round % 2];
        let before = allocations();
        session.encode(&window).unwrap();
        let encode_allocs = allocations() - before;

        let mut timings = Timings::default();
        let before = allocations();
        let result = session.decode_window(&sot, 0, &opts, &mut timings).unwrap();
        let decode_allocs = allocations() - before;
        drop(result);
        eprintln!("beam {beam_size} {} session {} {file}: encode {encode_allocs} allocations, decode {decode_allocs} allocations for {} tokens", model.backend_name(), round % 2, timings.sampled_tokens);
        if round > 1 {
            assert_eq!(encode_allocs, 0, "{file}: the encoder window allocated");
            per_window.push((timings.sampled_tokens, decode_allocs));
        }
    }
    // Zero per token: the same small count for every window whatever its token count (the
    // returned token vector, and the prompt pass's GEMM packing buffer).
    assert!(
        per_window.windows(2).any(|w| w[0].0 != w[1].0),
        "need windows with different token counts: {per_window:?}"
    );
    for &(tokens, allocs) in &per_window {
        assert!(
            allocs == per_window[0].1 && allocs <= 2,
            "{allocs} allocations for a window of {tokens} tokens: {per_window:?}"
        );
    }
}
