//! Amanuensis: Whisper speech-to-text on the CPU and AMD Ryzen AI NPUs.
