//! Fuzzes the WAV parser: any bytes must give a WavAudio or a typed error, never a panic, and
//! a successful parse must be self-consistent.
#![no_main]

use amanuensis_model::audio::parse_wav;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wav) = parse_wav(data) {
        assert!(wav.sample_rate > 0 && wav.channels > 0);
        assert!(!wav.samples.is_empty());
        // Every sample frame takes at least one byte per channel.
        assert!(wav.samples.len() * wav.channels as usize <= data.len());
        assert!(wav.samples.iter().all(|s| s.is_finite()));
    }
});
