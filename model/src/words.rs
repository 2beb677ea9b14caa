//! Word timestamps, as faster-whisper 1.2.1 computes them with `word_timestamps=True`.
//!
//! After a window is decoded, one decoder pass over `[SOT sequence, <|notimestamps|>, text
//! tokens, EOT]` hands back the alignment heads' cross-attention (CTranslate2 `align`):
//! per head, the attention over the window's real frames (`num_frames / 2` encoder positions,
//! softmax over them only), standardised along the token axis, median-filtered along the
//! frame axis (width 7, reflected edges), averaged over the heads; DTW over its negation gives
//! a monotonic token→frame path. The text tokens are cut into words (at leading spaces and
//! punctuation, or at Unicode boundaries for languages without spaces), each word starting at
//! the frame where its first token's row is first reached; then faster-whisper's rules: long
//! words at sentence ends and after pauses are clipped to twice the median word duration,
//! punctuation is merged into its neighbours, segment starts and ends move to their first and
//! last words, and the long-form loop seeks to the last word's end.
//!
//! Everything here is plain arithmetic on slices; the decoder pass itself is in `session`.

use crate::segment::RawSegment;

/// Width of the median filter over the frame axis.
pub const MEDIAN_FILTER_WIDTH: usize = 7;
/// Encoder positions (DTW columns) per second.
pub const TOKENS_PER_SECOND: f64 = 50.0;
/// faster-whisper's default `prepend_punctuations`.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// faster-whisper's default `append_punctuations`.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
/// Marks that end a sentence (a word that is one of them may be clipped).
const SENTENCE_END_MARKS: &str = ".。!！?？";
/// Languages whose words are cut at Unicode boundaries instead of spaces.
const NO_SPACE_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// A word with its time span in seconds and its probability (the mean of its tokens').
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    /// The word's text, with Whisper's leading space (and any merged punctuation).
    pub word: String,
    pub probability: f64,
}

/// One word of a window's alignment, times relative to the window start.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// Median filter of odd `width` along `input`, edges reflected without repeating the edge
/// sample (`numpy`'s `reflect`, CTranslate2's `MedianFilter`). An input no longer than
/// `width / 2` is copied unchanged.
pub fn median_filter(input: &[f32], width: usize, out: &mut [f32]) {
    let n = input.len();
    let rank = width / 2;
    if n <= rank {
        out[..n].copy_from_slice(input);
        return;
    }
    let mut window = [0.0f32; 64];
    let window = &mut window[..width.min(64)];
    for (j, o) in out.iter_mut().enumerate().take(n) {
        for (k, w) in window.iter_mut().enumerate() {
            let mut read = (j as isize + k as isize - rank as isize).unsigned_abs();
            if read >= n {
                read = 2 * n - read - 2;
            }
            *w = input[read];
        }
        window.sort_unstable_by(f32::total_cmp);
        *o = window[rank];
    }
}

/// Standardises each column of a row-major `[rows, cols]` matrix along the row axis:
/// `(x − mean) / std` with the population standard deviation and no epsilon.
pub fn standardize_columns(
    m: &mut [f32],
    rows: usize,
    cols: usize,
    mean: &mut [f64],
    var: &mut [f64],
) {
    let (mean, var) = (&mut mean[..cols], &mut var[..cols]);
    mean.fill(0.0);
    var.fill(0.0);
    for row in m.chunks_exact(cols).take(rows) {
        for (s, &x) in mean.iter_mut().zip(row) {
            *s += x as f64;
        }
    }
    mean.iter_mut().for_each(|s| *s /= rows as f64);
    for row in m.chunks_exact(cols).take(rows) {
        for ((v, &mu), &x) in var.iter_mut().zip(mean.iter()).zip(row) {
            let d = x as f64 - mu;
            *v += d * d;
        }
    }
    var.iter_mut().for_each(|v| *v = (*v / rows as f64).sqrt());
    for row in m.chunks_exact_mut(cols).take(rows) {
        for ((x, &mu), &sd) in row.iter_mut().zip(mean.iter()).zip(var.iter()) {
            *x = ((*x as f64 - mu) / sd) as f32;
        }
    }
}

/// Reusable buffers of [`negative_dtw`].
#[derive(Debug, Default)]
pub struct DtwScratch {
    cost: Vec<f32>,
    trace: Vec<u8>,
}

/// Dynamic time warping over the cost `−x` of a row-major `[rows, cols]` matrix (openai
/// whisper's `dtw_cpu`, CTranslate2's `negative_dtw`): steps diagonal, down (next row) or
/// right (next column), ties going right, then down; the path from `(0, 0)` to
/// `(rows − 1, cols − 1)` as `(row, col)` pairs is written to `path`.
pub fn negative_dtw(
    x: &[f32],
    rows: usize,
    cols: usize,
    scratch: &mut DtwScratch,
    path: &mut Vec<(usize, usize)>,
) {
    path.clear();
    if rows == 0 || cols == 0 {
        return;
    }
    let w = cols + 1;
    let size = (rows + 1) * w;
    scratch.cost.clear();
    scratch.cost.resize(size, f32::INFINITY);
    scratch.trace.clear();
    scratch.trace.resize(size, u8::MAX);
    let (cost, trace) = (&mut scratch.cost, &mut scratch.trace);
    cost[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = -x[(i - 1) * cols + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    trace[..=cols].fill(2);
    for k in 0..=rows {
        trace[k * w] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    while i > 0 && j > 0 {
        path.push((i - 1, j - 1));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
}

/// Cuts `tokens` where their decoded text is whole Unicode (faster-whisper
/// `split_tokens_on_unicode`): a piece ends at a token after which the decoding of the piece
/// holds no replacement character, unless the full text has one at the same place.
/// `decode` decodes a token list (specials to "").
pub fn split_tokens_on_unicode(
    tokens: &[u32],
    decode: &dyn Fn(&[u32]) -> String,
) -> (Vec<String>, Vec<Vec<u32>>) {
    const REPLACEMENT: char = '\u{fffd}';
    let full: Vec<char> = decode(tokens).chars().collect();
    let mut words = Vec::new();
    let mut word_tokens = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut offset = 0usize;
    for &t in tokens {
        current.push(t);
        let decoded = decode(&current);
        let bad = decoded
            .chars()
            .position(|c| c == REPLACEMENT)
            .map(|i| i + offset);
        let whole = match bad {
            None => true,
            Some(i) => i < full.len() && full[i] == REPLACEMENT,
        };
        if whole {
            offset += decoded.chars().count();
            words.push(decoded);
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    (words, word_tokens)
}

/// Python's `string.punctuation`.
fn is_ascii_punctuation_str(s: &str) -> bool {
    // `s.strip() in string.punctuation`: a substring of the punctuation string (the empty
    // string included).
    const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    PUNCTUATION.contains(s)
}

/// Python's `str.strip()` (Unicode whitespace and the information separators).
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_whitespace)
}

/// Python's `str.isspace()` for one character.
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Cuts `tokens` into words (faster-whisper `split_tokens_on_spaces`): Unicode pieces are
/// joined to the previous word unless they start with a space, are punctuation or special
/// (`≥ eot`).
pub fn split_tokens_on_spaces(
    tokens: &[u32],
    eot: u32,
    decode: &dyn Fn(&[u32]) -> String,
) -> (Vec<String>, Vec<Vec<u32>>) {
    let (subwords, subword_tokens) = split_tokens_on_unicode(tokens, decode);
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks[0] >= eot;
        let with_space = subword.starts_with(' ');
        let punctuation = is_ascii_punctuation_str(py_strip(&subword));
        if special || with_space || punctuation || words.is_empty() {
            words.push(subword);
            word_tokens.push(toks);
        } else {
            words.last_mut().expect("not empty").push_str(&subword);
            word_tokens.last_mut().expect("not empty").extend(toks);
        }
    }
    (words, word_tokens)
}

/// Words of `tokens` for `language` (faster-whisper `split_to_word_tokens`).
pub fn split_to_word_tokens(
    tokens: &[u32],
    eot: u32,
    language: &str,
    decode: &dyn Fn(&[u32]) -> String,
) -> (Vec<String>, Vec<Vec<u32>>) {
    if NO_SPACE_LANGUAGES.contains(&language) {
        split_tokens_on_unicode(tokens, decode)
    } else {
        split_tokens_on_spaces(tokens, eot, decode)
    }
}

/// The words of one window from the DTW path (faster-whisper `find_alignment` after
/// CTranslate2 `align`): `text_tokens` the window's text tokens, `path` the DTW path over
/// their `len + 1` rows, `token_probs` each text token's probability. Times relative to the
/// window start.
pub fn timings_from_path(
    text_tokens: &[u32],
    eot: u32,
    language: &str,
    path: &[(usize, usize)],
    token_probs: &[f64],
    decode: &dyn Fn(&[u32]) -> String,
) -> Vec<WordTiming> {
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(eot);
    let (words, word_tokens) = split_to_word_tokens(&with_eot, eot, language, decode);
    if word_tokens.len() <= 1 {
        return Vec::new();
    }
    // Boundaries: 0 and the cumulative token counts of all words but the last (EOT).
    let mut boundaries = Vec::with_capacity(word_tokens.len());
    boundaries.push(0usize);
    let mut acc = 0;
    for t in &word_tokens[..word_tokens.len() - 1] {
        acc += t.len();
        boundaries.push(acc);
    }
    // The time of each row's first cell on the path.
    let mut jump_times = Vec::with_capacity(text_tokens.len() + 1);
    let mut prev_row = None;
    for &(row, col) in path {
        if prev_row != Some(row) {
            jump_times.push(col as f64 / TOKENS_PER_SECOND);
            prev_row = Some(row);
        }
    }
    let n = (words.len()).min(boundaries.len() - 1);
    let mut out = Vec::with_capacity(n);
    for (k, (word, tokens)) in words.into_iter().zip(word_tokens).take(n).enumerate() {
        let (b0, b1) = (boundaries[k], boundaries[k + 1]);
        let (Some(&start), Some(&end)) = (jump_times.get(b0), jump_times.get(b1)) else {
            break;
        };
        let probs = &token_probs[b0.min(token_probs.len())..b1.min(token_probs.len())];
        let probability = if probs.is_empty() {
            f64::NAN
        } else {
            probs.iter().sum::<f64>() / probs.len() as f64
        };
        out.push(WordTiming {
            word,
            tokens,
            start,
            end,
            probability,
        });
    }
    out
}

/// Merges punctuation into the neighbouring words (openai/whisper `merge_punctuations`):
/// a word that is a space and a prepend mark joins the following word; an append mark joins
/// the previous word unless that one ends with a space. Merged-away words keep empty text and
/// no tokens.
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() >= 2 {
        let mut i = alignment.len() as isize - 2;
        let mut j = alignment.len() - 1;
        while i >= 0 {
            let iu = i as usize;
            let prev = &alignment[iu];
            if prev.word.starts_with(' ') && prepended.contains(py_strip(&prev.word)) {
                let (left, right) = alignment.split_at_mut(j);
                let (prev, following) = (&mut left[iu], &mut right[0]);
                following.word = format!("{}{}", prev.word, following.word);
                let mut tokens = std::mem::take(&mut prev.tokens);
                tokens.extend_from_slice(&following.tokens);
                following.tokens = tokens;
                prev.word.clear();
            } else {
                j = iu;
            }
            i -= 1;
        }
    }
    let mut i = 0;
    let mut j = 1;
    while j < alignment.len() {
        let (left, right) = alignment.split_at_mut(j);
        let (prev, following) = (&mut left[i], &mut right[0]);
        if !prev.word.ends_with(' ') && appended.contains(following.word.as_str()) {
            prev.word.push_str(&following.word);
            prev.tokens.extend(std::mem::take(&mut following.tokens));
            following.word.clear();
        } else {
            i = j;
        }
        j += 1;
    }
}

/// Python's `round(x, 2)` (correctly rounded from the exact binary value).
pub fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// Median (numpy's: the mean of the two middle values for an even count) of `v`, sorted in
/// place; 0 for none.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// faster-whisper `add_word_timestamps` for one window: `segments` are the window's
/// segments (their start and end may move to their words'), `alignment` the window's word
/// timings (from [`timings_from_path`]), `time_offset` the window start in seconds.
/// Returns each segment's words and the updated last-speech time.
pub fn add_word_timestamps(
    segments: &mut [RawSegment],
    mut alignment: Vec<WordTiming>,
    eot: u32,
    time_offset: f64,
    prepend: &str,
    append: &str,
    mut last_speech_timestamp: f64,
) -> (Vec<Vec<Word>>, f64) {
    let mut durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    let any_duration = !durations.is_empty();
    let median_duration = median(&mut durations).min(0.7);
    let max_duration = median_duration * 2.0;
    if any_duration {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, prepend, append);

    let mut all_words = Vec::with_capacity(segments.len());
    let mut word_index = 0;
    for segment in segments.iter_mut() {
        let n_text = segment.tokens.iter().filter(|&&t| t < eot).count();
        let mut saved_tokens = 0;
        let mut words: Vec<Word> = Vec::new();
        while word_index < alignment.len() && saved_tokens < n_text {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(Word {
                    word: timing.word.clone(),
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    probability: timing.probability,
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }
        if !words.is_empty() {
            // The first and second word after a pause: at most twice the median duration.
            if words[0].end - last_speech_timestamp > median_duration * 4.0
                && (words[0].end - words[0].start > max_duration
                    || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0))
            {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // Prefer the segment's start if the first word is too long.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median_duration).min(segment.start).max(0.0);
            } else {
                segment.start = words[0].start;
            }
            // Prefer the segment's end if the last word is too long.
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median_duration).max(segment.end);
            } else {
                segment.end = words[last].end;
            }
            last_speech_timestamp = segment.end;
        }
        all_words.push(words);
    }
    (all_words, last_speech_timestamp)
}

/// The end of the last word of `segments`, else the last segment's end (faster-whisper
/// `get_end`).
pub fn last_end(segments: &[RawSegment], words: &[Vec<Word>]) -> Option<f64> {
    words
        .iter()
        .rev()
        .find_map(|w| w.last().map(|w| w.end))
        .or_else(|| segments.last().map(|s| s.end))
}

/// Reusable buffers of the alignment arithmetic for one window.
#[derive(Debug, Default)]
pub struct AlignScratch {
    /// `[heads, rows, cols]` attention, then standardised.
    pub weights: Vec<f32>,
    /// `[rows, cols]` the median-filtered mean over heads.
    pub matrix: Vec<f32>,
    filtered: Vec<f32>,
    mean: Vec<f64>,
    var: Vec<f64>,
    pub dtw: DtwScratch,
    pub path: Vec<(usize, usize)>,
}

impl AlignScratch {
    /// Buffers for up to `rows` tokens, `cols` frames and `heads` heads.
    pub fn with_capacity(heads: usize, rows: usize, cols: usize) -> Self {
        Self {
            weights: Vec::with_capacity(heads * rows * cols),
            matrix: Vec::with_capacity(rows * cols),
            filtered: Vec::with_capacity(cols),
            mean: Vec::with_capacity(cols),
            var: Vec::with_capacity(cols),
            dtw: DtwScratch {
                cost: Vec::with_capacity((rows + 1) * (cols + 1)),
                trace: Vec::with_capacity((rows + 1) * (cols + 1)),
            },
            path: Vec::with_capacity(rows + cols),
        }
    }

    /// From `self.weights` (`[heads, rows, cols]`, each row a probability distribution over
    /// the `cols` real frames): standardise along the rows, median filter along the frames,
    /// mean over heads, then DTW over rows `first..first + n` of the mean. The path is left in
    /// `self.path` (rows relative to `first`).
    pub fn align(&mut self, heads: usize, rows: usize, cols: usize, first: usize, n: usize) {
        let plane = rows * cols;
        self.mean.resize(cols, 0.0);
        self.var.resize(cols, 0.0);
        self.filtered.resize(cols, 0.0);
        self.matrix.clear();
        self.matrix.resize(plane, 0.0);
        for h in 0..heads {
            let m = &mut self.weights[h * plane..(h + 1) * plane];
            standardize_columns(m, rows, cols, &mut self.mean, &mut self.var);
            for (row, acc) in m.chunks_exact(cols).zip(self.matrix.chunks_exact_mut(cols)) {
                median_filter(row, MEDIAN_FILTER_WIDTH, &mut self.filtered);
                for (a, &f) in acc.iter_mut().zip(&self.filtered) {
                    *a += f;
                }
            }
        }
        let inv = heads as f32;
        self.matrix.iter_mut().for_each(|x| *x /= inv);
        let sub = &self.matrix[first * cols..(first + n) * cols];
        negative_dtw(sub, n, cols, &mut self.dtw, &mut self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_reflects_edges() {
        // width 3: [1, 5, 2, 8, 3]; edges reflect (x[1] before x[0], x[n-2] after x[n-1]).
        let x = [1.0, 5.0, 2.0, 8.0, 3.0];
        let mut out = [0.0; 5];
        median_filter(&x, 3, &mut out);
        // j=0: [5,1,5] -> 5; j=1: [1,5,2] -> 2; j=2: [5,2,8] -> 5; j=3: [2,8,3] -> 3;
        // j=4: [8,3,8] -> 8.
        assert_eq!(out, [5.0, 2.0, 5.0, 3.0, 8.0]);
        // Width 7 over 4 values: reflection twice removed is still in range.
        let x = [4.0, 1.0, 3.0, 2.0];
        let mut out = [0.0; 4];
        median_filter(&x, 7, &mut out);
        // j=0 reads |−3..3| = 3,2,1,0,1,2,3 -> [2,3,1,4,1,3,2] -> median 2.
        assert_eq!(out[0], 2.0);
        // Too short: copied.
        let mut out = [0.0; 3];
        median_filter(&[3.0, 1.0, 2.0], 7, &mut out);
        assert_eq!(out, [3.0, 1.0, 2.0]);
    }

    #[test]
    fn standardize_is_population_z_score_per_column() {
        // Column 0: [1, 3] -> mean 2, std 1 -> [-1, 1]; column 1: [2, 2, ...] needs variance:
        // use [0, 4] -> mean 2, std 2 -> [-1, 1].
        let mut m = [1.0, 0.0, 3.0, 4.0];
        let (mut mean, mut var) = (vec![0.0; 2], vec![0.0; 2]);
        standardize_columns(&mut m, 2, 2, &mut mean, &mut var);
        assert_eq!(m, [-1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn dtw_follows_the_largest_values() {
        // 2 tokens x 4 frames: token 0 strong at frames 0-1, token 1 at frames 2-3.
        let x = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let mut s = DtwScratch::default();
        let mut path = Vec::new();
        negative_dtw(&x, 2, 4, &mut s, &mut path);
        // Hand-computed: at (2,2) the cell above (−2) beats the diagonal and the left (−1); at
        // (2,3) all three tie at −2 and the left wins.
        assert_eq!(path, vec![(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)]);
        // Ties go right: all zeros, 2x2. At (2,2) c0 = c1 = c2 = 0 -> from the left (2,1),
        // which came from above (1,1) (the only finite neighbour), which came from (0,0).
        let x = [0.0; 4];
        negative_dtw(&x, 2, 2, &mut s, &mut path);
        assert_eq!(path, vec![(0, 0), (1, 0), (1, 1)]);
    }

    fn dec(words: &'static [&'static str]) -> impl Fn(&[u32]) -> String {
        move |ids: &[u32]| {
            ids.iter()
                .map(|&i| words.get(i as usize).copied().unwrap_or(""))
                .collect()
        }
    }

    #[test]
    fn split_on_spaces_joins_subwords_and_keeps_punctuation() {
        // 0 " And", 1 " so", 2 " my", 3 " fell", 4 "ow", 5 ",", 6 " Americans", 7 "." ; 9 = EOT
        static W: [&str; 8] = [" And", " so", " my", " fell", "ow", ",", " Americans", "."];
        let d = dec(&W);
        let (words, toks) = split_tokens_on_spaces(&[0, 1, 2, 3, 4, 5, 6, 7, 9], 9, &d);
        assert_eq!(
            words,
            vec![" And", " so", " my", " fellow", ",", " Americans", ".", ""]
        );
        assert_eq!(toks[3], vec![3, 4]);
        assert_eq!(toks[7], vec![9]);
    }

    #[test]
    fn split_on_unicode_waits_for_whole_characters() {
        // Tokens 0 and 1 decode to half a character each (U+FFFD) and to "é" together.
        let d = |ids: &[u32]| -> String {
            let mut s = String::new();
            let mut i = 0;
            while i < ids.len() {
                match ids[i] {
                    0 if ids.get(i + 1) == Some(&1) => {
                        s.push('é');
                        i += 2;
                        continue;
                    }
                    0 | 1 => s.push('\u{fffd}'),
                    2 => s.push_str(" a"),
                    _ => {}
                }
                i += 1;
            }
            s
        };
        let (words, toks) = split_tokens_on_unicode(&[2, 0, 1, 2], &d);
        assert_eq!(words, vec![" a", "é", " a"]);
        assert_eq!(toks, vec![vec![2], vec![0, 1], vec![2]]);
    }

    fn wt(word: &str, tokens: &[u32], start: f64, end: f64) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: tokens.to_vec(),
            start,
            end,
            probability: 0.5,
        }
    }

    #[test]
    fn punctuation_merges_into_neighbours() {
        let mut a = vec![
            wt(" \"", &[1], 0.0, 0.1),
            wt("Hello", &[2], 0.1, 0.5),
            wt(",", &[3], 0.5, 0.6),
            wt(" world", &[4], 0.6, 1.0),
            wt(".", &[5], 1.0, 1.2),
            wt("\"", &[6], 1.2, 1.3),
        ];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, vec!["", " \"Hello,", "", " world.\"", "", ""]);
        assert_eq!(a[1].tokens, vec![1, 2, 3]);
        assert_eq!(a[3].tokens, vec![4, 5, 6]);
        // Times are the kept word's own.
        assert_eq!((a[1].start, a[1].end), (0.1, 0.5));
    }

    #[test]
    fn timings_from_path_take_first_cell_of_each_row() {
        // Tokens " a" " b" "c" + EOT: rows 0..=3; path jumps at cols 0, 2, 5, 9.
        static W: [&str; 3] = [" a", " b", "c"];
        let d = dec(&W);
        let path = [
            (0, 0),
            (0, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 5),
            (2, 6),
            (2, 7),
            (2, 8),
            (3, 9),
        ];
        let t = timings_from_path(&[0, 1, 2], 9, "en", &path, &[0.9, 0.5, 0.7], &d);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].word.as_str(), t[0].start, t[0].end),
            (" a", 0.0, 0.04)
        );
        assert_eq!(
            (t[1].word.as_str(), t[1].start, t[1].end),
            (" bc", 0.04, 0.18)
        );
        assert!((t[1].probability - 0.6).abs() < 1e-12);
    }

    #[test]
    fn word_rules_clip_long_words_and_move_segment_edges() {
        // Durations 0.2, 0.2, 2.0 (after a "."), 0.2 -> median 0.2, max 0.4.
        let alignment = vec![
            wt(" One", &[1], 0.0, 0.2),
            wt(".", &[2], 0.2, 0.4),
            wt(" Two", &[3], 0.4, 2.4),
            wt(" three", &[4], 2.4, 2.6),
        ];
        let mut segs = vec![RawSegment {
            start: 10.0,
            end: 13.0,
            tokens: vec![100, 1, 2, 3, 4, 101],
        }];
        let (words, last) = add_word_timestamps(
            &mut segs,
            alignment,
            50,
            10.0,
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
            10.0,
        );
        let w = &words[0];
        let texts: Vec<&str> = w.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, vec![" One.", " Two", " three"]);
        // " Two" followed a "." and was 2.0 s long: its start moves to end − 0.4.
        assert_eq!((w[1].start, w[1].end), (12.0, 12.4));
        // Segment edges move to the words (first word not much later than the segment).
        assert_eq!((segs[0].start, segs[0].end), (10.0, 12.6));
        assert_eq!(last, 12.6);
        assert_eq!(last_end(&segs, &words), Some(12.6));
    }

    #[test]
    fn round2_is_pythons() {
        assert_eq!(round2(0.1 + 0.2), 0.3);
        assert_eq!(round2(29.98 + 0.02 * 3.0), 30.04);
        assert_eq!(round2(1.005), 1.0); // 1.005 is 1.00499999999999989... in binary
    }
}
