//! Beam search as CTranslate2 4.x runs it for faster-whisper (`src/decoding.cc`,
//! `BeamSearch::search`): the bookkeeping only; the model computes each beam's
//! log-probabilities.
//!
//! Each step, every alive beam's filtered log-probabilities (f32, `logit − logsumexp`) are
//! added to its cumulative score and the best `2·beam` (beam, token) candidates over all beams
//! are taken, best first. Walking the first `beam` of them: a candidate ending in
//! `<|endoftext|>` (or any candidate at the last allowed step) registers a finished hypothesis
//! (its tokens without EOT, its cumulative score) and its place goes to the next candidate
//! after the first `beam` that does not end in EOT; the others continue as they are. The
//! search stops at the length limit, or once `round(beam · patience)` hypotheses are
//! registered (faster-whisper's default patience is 1), or, with length penalty 0 only,
//! once the best beam of some step has finished. The winner has the best
//! `score / len(tokens)^length_penalty` (default 1). The first step expands the single prompt
//! beam. Nothing here allocates after [`BeamSearch::new`].

/// faster-whisper's `patience` and `length_penalty` (both 1 by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamOptions {
    /// Stop once `round(beam · patience)` hypotheses finished (`> 0`).
    pub patience: f32,
    /// Rank finished hypotheses by `score / len^length_penalty`; 0 also allows CTranslate2's
    /// early exit (stop when the step's best beam finished).
    pub length_penalty: f32,
}

impl Default for BeamOptions {
    fn default() -> Self {
        Self {
            patience: 1.0,
            length_penalty: 1.0,
        }
    }
}

impl BeamOptions {
    /// Hypotheses to collect before stopping (`std::round(float(beam) * patience)`, halves
    /// away from zero), or `None` when that is 0 (CTranslate2 refuses: fewer than the one
    /// hypothesis asked for) or `patience` is not a positive finite number.
    pub fn max_candidates(&self, beam: usize) -> Option<usize> {
        if !(self.patience.is_finite() && self.patience > 0.0) {
            return None;
        }
        let n = (beam as f32 * self.patience).round();
        (n >= 1.0 && n <= u32::MAX as f32).then_some(n as usize)
    }
}

/// One candidate: continue beam `beam` with `token`, reaching cumulative `score`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub beam: usize,
    pub token: u32,
    pub score: f32,
}

/// What a step decided: for each new beam `k`, its parent beam and appended token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Continuation {
    pub parent: usize,
    pub token: u32,
}

/// The beam-search state of one window.
pub struct BeamSearch {
    beam: usize,
    eot: u32,
    options: BeamOptions,
    max_candidates: usize,
    /// With length penalty 0: the best candidate of some step has finished.
    top_beam_finished: bool,
    /// Alive beams' tokens (this window's, prompt excluded), and the next step's copies.
    tokens: Vec<Vec<u32>>,
    next_tokens: Vec<Vec<u32>>,
    scores: Vec<f32>,
    next_scores: Vec<f32>,
    alive: usize,
    /// Candidates of the current step, best first (`2·beam` of them).
    candidates: Vec<Candidate>,
    continuations: Vec<Continuation>,
    /// Finished hypotheses: tokens and cumulative score (`finished_len` of them in use).
    finished: Vec<(Vec<u32>, f32)>,
    finished_len: usize,
}

impl BeamSearch {
    /// State for `beam` beams over sequences of at most `max_tokens` sampled tokens, with
    /// faster-whisper's default patience and length penalty.
    ///
    /// # Panics
    /// If `beam` is 0.
    pub fn new(beam: usize, eot: u32, max_tokens: usize) -> Self {
        Self::with_options(beam, eot, max_tokens, BeamOptions::default())
    }

    /// As [`BeamSearch::new`] with `options`.
    ///
    /// # Panics
    /// If `beam` is 0 or `options.max_candidates(beam)` is `None` (callers check it first).
    pub fn with_options(beam: usize, eot: u32, max_tokens: usize, options: BeamOptions) -> Self {
        assert!(beam > 0, "beam search needs at least one beam");
        let max_candidates = options
            .max_candidates(beam)
            .expect("patience gives at least one hypothesis");
        let seq = || Vec::with_capacity(max_tokens + 1);
        Self {
            beam,
            eot,
            options,
            max_candidates,
            top_beam_finished: false,
            tokens: (0..beam).map(|_| seq()).collect(),
            next_tokens: (0..beam).map(|_| seq()).collect(),
            scores: vec![0.0; beam],
            next_scores: vec![0.0; beam],
            alive: 1,
            candidates: Vec::with_capacity(2 * beam),
            continuations: Vec::with_capacity(beam),
            // At most max_candidates − 1 registered before the step that ends the search,
            // plus beam at it.
            finished: (0..max_candidates + beam).map(|_| (seq(), 0.0)).collect(),
            finished_len: 0,
        }
    }

    /// Beams in the search.
    pub fn beam(&self) -> usize {
        self.beam
    }

    /// The patience and length penalty the search runs with.
    pub fn options(&self) -> BeamOptions {
        self.options
    }

    /// Starts a window: one alive beam with no tokens.
    pub fn reset(&mut self) {
        self.tokens[0].clear();
        self.scores[0] = 0.0;
        self.alive = 1;
        self.finished_len = 0;
        self.top_beam_finished = false;
    }

    /// Alive beams (1 before the first step, `beam` after).
    pub fn alive(&self) -> usize {
        self.alive
    }

    /// The tokens sampled so far on alive beam `b` (what the logit filters look at).
    pub fn tokens(&self, b: usize) -> &[u32] {
        &self.tokens[b]
    }

    /// Runs one step over the alive beams' log-probabilities (`logprobs[b]`, one row of the
    /// vocabulary per alive beam, disabled tokens −∞). `last` marks the last allowed step.
    /// Returns the continuations (one per new beam, in order; empty when the search is over).
    pub fn step(&mut self, logprobs: &[&[f32]], last: bool) -> &[Continuation] {
        assert_eq!(
            logprobs.len(),
            self.alive,
            "one log-prob row per alive beam"
        );
        let want = 2 * self.beam;
        self.candidates.clear();
        for (b, row) in logprobs.iter().enumerate() {
            let base = self.scores[b];
            for (t, &lp) in row.iter().enumerate() {
                if lp == f32::NEG_INFINITY {
                    continue;
                }
                let c = Candidate {
                    beam: b,
                    token: t as u32,
                    score: base + lp,
                };
                insert_best(&mut self.candidates, want, c);
            }
        }
        self.continuations.clear();
        if self.candidates.is_empty() {
            return &self.continuations;
        }
        let mut secondary = self.beam;
        for k in 0..self.beam.min(self.candidates.len()) {
            let c = self.candidates[k];
            let mut next = k;
            if c.token == self.eot || last {
                if k == 0 {
                    self.top_beam_finished = true;
                }
                self.register(c);
                while secondary < self.candidates.len() {
                    let j = secondary;
                    secondary += 1;
                    if self.candidates[j].token != self.eot {
                        next = j;
                        break;
                    }
                }
            }
            let n = self.candidates[next];
            self.continuations.push(Continuation {
                parent: n.beam,
                token: n.token,
            });
            self.next_scores[k] = n.score;
        }
        let done = if self.options.length_penalty == 0.0 {
            // CTranslate2's early exit (no penalty): one hypothesis is asked for.
            self.top_beam_finished && self.finished_len >= 1
        } else {
            self.finished_len >= self.max_candidates
        };
        if last || done {
            self.continuations.clear();
            return &self.continuations;
        }
        // Advance: new beam k = its parent's tokens + its token, with its candidate's score.
        for (k, c) in self.continuations.iter().enumerate() {
            let dst = &mut self.next_tokens[k];
            dst.clear();
            dst.extend_from_slice(&self.tokens[c.parent]);
            dst.push(c.token);
        }
        std::mem::swap(&mut self.tokens, &mut self.next_tokens);
        std::mem::swap(&mut self.scores, &mut self.next_scores);
        self.alive = self.continuations.len();
        &self.continuations
    }

    fn register(&mut self, c: Candidate) {
        if self.finished_len == self.finished.len() {
            return; // cannot happen (see `new`); never grow in the loop
        }
        let (tokens, score) = &mut self.finished[self.finished_len];
        tokens.clear();
        tokens.extend_from_slice(&self.tokens[c.beam]);
        if c.token != self.eot {
            tokens.push(c.token);
        }
        *score = c.score;
        self.finished_len += 1;
    }

    /// The best finished hypothesis by `score / len^length_penalty`: its tokens and its
    /// cumulative log-probability. `None` if nothing finished.
    pub fn best(&self) -> Option<(&[u32], f32)> {
        let lp = self.options.length_penalty;
        let mut best: Option<(usize, f32)> = None;
        for (i, (tokens, score)) in self.finished[..self.finished_len].iter().enumerate() {
            // `score /= std::pow(length, length_penalty)` in f32; powf(n, 1) is n exactly.
            let normalised = score / (tokens.len() as f32).powf(lp);
            if best.is_none_or(|(_, b)| normalised > b) {
                best = Some((i, normalised));
            }
        }
        best.map(|(i, _)| {
            let (tokens, score) = &self.finished[i];
            (tokens.as_slice(), *score)
        })
    }
}

/// Keeps `list` the best `cap` candidates, best first (ties: the earlier one first).
fn insert_best(list: &mut Vec<Candidate>, cap: usize, c: Candidate) {
    if list.len() == cap && list.last().is_some_and(|l| l.score >= c.score) {
        return;
    }
    let at = list.partition_point(|x| x.score >= c.score);
    if list.len() == cap {
        list.pop();
    }
    list.insert(at, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: u32 = 9;

    fn row(pairs: &[(usize, f32)]) -> Vec<f32> {
        let mut r = vec![f32::NEG_INFINITY; 10];
        for &(t, lp) in pairs {
            r[t] = lp;
        }
        r
    }

    #[test]
    fn first_step_expands_the_single_beam() {
        let mut s = BeamSearch::new(2, EOT, 10);
        let r = row(&[(1, -0.1), (2, -0.5), (3, -2.0), (4, -3.0)]);
        let c = s.step(&[&r], false).to_vec();
        assert_eq!(
            c,
            vec![
                Continuation {
                    parent: 0,
                    token: 1
                },
                Continuation {
                    parent: 0,
                    token: 2
                }
            ]
        );
        assert_eq!(s.alive(), 2);
        assert_eq!(s.tokens(0), &[1]);
        assert_eq!(s.tokens(1), &[2]);
    }

    #[test]
    fn eot_candidates_finish_and_are_replaced() {
        let mut s = BeamSearch::new(2, EOT, 10);
        let r = row(&[(1, -0.1), (2, -0.5)]);
        s.step(&[&r], false);
        // Beam 0 (score -0.1): EOT best overall; beam 1 (score -0.5): token 3.
        let r0 = row(&[(EOT as usize, -0.05), (4, -1.0)]);
        let r1 = row(&[(3, -0.1), (5, -2.0)]);
        let c = s.step(&[&r0, &r1], false).to_vec();
        // Candidates: (0,EOT) -0.15, (1,3) -0.6, (0,4) -1.1, (1,5) -2.5. The first is EOT:
        // registered, replaced by the first non-EOT among the secondary ones, (0,4).
        assert_eq!(
            c,
            vec![
                Continuation {
                    parent: 0,
                    token: 4
                },
                Continuation {
                    parent: 1,
                    token: 3
                }
            ]
        );
        assert_eq!(s.tokens(0), &[1, 4]);
        assert_eq!(s.tokens(1), &[2, 3]);
        let (best, score) = s.best().unwrap();
        assert_eq!(best, &[1]);
        assert!((score + 0.15).abs() < 1e-6);
        // Second EOT finishes the search (2 hypotheses = beam).
        let r0 = row(&[(EOT as usize, -0.01)]);
        let r1 = row(&[(EOT as usize, -3.0)]);
        assert!(s.step(&[&r0, &r1], false).is_empty());
        // [1] scores -0.15/1; [1, 4] scores -1.11/2 = -0.555: the shorter wins.
        assert_eq!(s.best().unwrap().0, &[1]);
    }

    #[test]
    fn last_step_registers_every_beam_with_its_token() {
        let mut s = BeamSearch::new(2, EOT, 10);
        s.step(&[&row(&[(1, -0.1), (2, -0.2)])], false);
        let r = row(&[(3, -0.1)]);
        assert!(s.step(&[&r, &r], true).is_empty());
        // Both registered with the last token appended; best by score / len.
        let (best, score) = s.best().unwrap();
        assert_eq!(best, &[1, 3]);
        assert!((score + 0.2).abs() < 1e-6);
    }

    #[test]
    fn keeps_the_best_candidates_in_order() {
        let mut l = Vec::new();
        for (i, s) in [-3.0, -1.0, -2.0, -0.5, -4.0, -1.0].into_iter().enumerate() {
            insert_best(
                &mut l,
                3,
                Candidate {
                    beam: 0,
                    token: i as u32,
                    score: s,
                },
            );
        }
        let got: Vec<u32> = l.iter().map(|c| c.token).collect();
        assert_eq!(got, vec![3, 1, 5]); // ties keep the earlier first
    }

    /// The search of `eot_candidates_finish_and_are_replaced` up to its first registration:
    /// [1] finished at −0.15, beams [1, 4] (−1.1) and [2, 3] (−0.6) alive.
    fn after_one_finished(options: BeamOptions) -> BeamSearch {
        let mut s = BeamSearch::with_options(2, EOT, 10, options);
        s.step(&[&row(&[(1, -0.1), (2, -0.5)])], false);
        let r0 = row(&[(EOT as usize, -0.05), (4, -1.0)]);
        let r1 = row(&[(3, -0.1), (5, -2.0)]);
        assert_eq!(s.step(&[&r0, &r1], false).len(), 2);
        s
    }

    #[test]
    fn patience_sets_how_many_hypotheses_end_the_search() {
        let opts = |patience| BeamOptions {
            patience,
            length_penalty: 1.0,
        };
        // round(2 · patience), halves away from zero, at least 1.
        assert_eq!(opts(1.0).max_candidates(2), Some(2));
        assert_eq!(opts(1.25).max_candidates(2), Some(3)); // 2.5 → 3
        assert_eq!(opts(0.2).max_candidates(2), None); // 0.4 → 0
        assert_eq!(opts(0.25).max_candidates(2), Some(1)); // 0.5 → 1
        assert_eq!(opts(0.0).max_candidates(2), None);
        assert_eq!(opts(f32::NAN).max_candidates(2), None);
        // Patience 2 (4 hypotheses): two more EOTs do not end the search, a third does.
        let mut s = after_one_finished(opts(2.0));
        let eots = row(&[(EOT as usize, -0.01), (6, -5.0)]);
        assert_eq!(s.step(&[&eots, &eots], false).len(), 2);
        let eots = row(&[(EOT as usize, -0.01)]);
        assert!(s.step(&[&eots, &eots], false).is_empty());
        // Patience 0.5 (1 hypothesis): the first EOT ends it.
        let mut s = BeamSearch::with_options(2, EOT, 10, opts(0.5));
        s.step(&[&row(&[(1, -0.1), (2, -0.5)])], false);
        let r0 = row(&[(EOT as usize, -0.05), (4, -1.0)]);
        let r1 = row(&[(3, -0.1), (5, -2.0)]);
        assert!(s.step(&[&r0, &r1], false).is_empty());
        assert_eq!(s.best().unwrap().0, &[1]);
    }

    #[test]
    fn length_penalty_zero_exits_when_the_best_beam_finishes() {
        let zero = BeamOptions {
            patience: 1.0,
            length_penalty: 0.0,
        };
        // The step's best candidate was EOT: done after one hypothesis.
        let mut s = BeamSearch::with_options(2, EOT, 10, zero);
        s.step(&[&row(&[(1, -0.1), (2, -0.5)])], false);
        let r0 = row(&[(EOT as usize, -0.05), (4, -1.0)]);
        let r1 = row(&[(3, -0.1), (5, -2.0)]);
        assert!(s.step(&[&r0, &r1], false).is_empty());
        // An EOT that is not the step's best does not end the search.
        let mut s = BeamSearch::with_options(2, EOT, 10, zero);
        s.step(&[&row(&[(1, -0.1), (2, -0.5)])], false);
        let r0 = row(&[(4, -0.01), (6, -3.0)]);
        let r1 = row(&[(EOT as usize, -0.1), (5, -2.0)]);
        assert_eq!(s.step(&[&r0, &r1], false).len(), 2);
        assert_eq!(s.best().unwrap().0, &[2]);
    }

    #[test]
    fn length_penalty_ranks_the_finished_hypotheses() {
        // Finished: [1] at −0.15 and, at the last step, [1, 4, 7] at −1.2 and [2, 3, 7] at −0.7.
        let run = |length_penalty| {
            let mut s = after_one_finished(BeamOptions {
                patience: 2.0,
                length_penalty,
            });
            let r = row(&[(7, -0.1)]);
            assert!(s.step(&[&r, &r], true).is_empty());
            s.best().unwrap().0.to_vec()
        };
        // Penalty 1: −0.15 vs −0.7/3 = −0.233: the short one. Penalty 2: −0.7/9 = −0.078
        // beats −0.15. (Penalty 0 would have stopped at [1], the first step's best EOT.)
        assert_eq!(run(1.0), vec![1]);
        assert_eq!(run(2.0), vec![2, 3, 7]);
    }
}
