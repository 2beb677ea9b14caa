//! Beam search as CTranslate2 runs it for faster-whisper (`beam_size` 5, patience 1, length
//! penalty 1): the bookkeeping only; the model computes each beam's log-probabilities.
//!
//! Each step, every alive beam's filtered log-probabilities (f32, `logit − logsumexp`) are
//! added to its cumulative score and the best `2·beam` (beam, token) candidates over all beams
//! are taken, best first. Walking the first `beam` of them: a candidate ending in
//! `<|endoftext|>` (or any candidate at the last allowed step) registers a finished hypothesis
//! (its tokens without EOT, its cumulative score) and its place goes to the next candidate
//! after the first `beam` that does not end in EOT; the others continue as they are. The
//! search stops once `beam` hypotheses are registered (patience 1) or at the length limit;
//! the winner has the best `score / len(tokens)`. The first step expands the single prompt
//! beam. Nothing here allocates after [`BeamSearch::new`].

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
    /// State for `beam` beams over sequences of at most `max_tokens` sampled tokens.
    ///
    /// # Panics
    /// If `beam` is 0.
    pub fn new(beam: usize, eot: u32, max_tokens: usize) -> Self {
        assert!(beam > 0, "beam search needs at least one beam");
        let seq = || Vec::with_capacity(max_tokens + 1);
        Self {
            beam,
            eot,
            tokens: (0..beam).map(|_| seq()).collect(),
            next_tokens: (0..beam).map(|_| seq()).collect(),
            scores: vec![0.0; beam],
            next_scores: vec![0.0; beam],
            alive: 1,
            candidates: Vec::with_capacity(2 * beam),
            continuations: Vec::with_capacity(beam),
            // At most beam − 1 registered before the last step, plus beam at it.
            finished: (0..2 * beam).map(|_| (seq(), 0.0)).collect(),
            finished_len: 0,
        }
    }

    /// Beams in the search.
    pub fn beam(&self) -> usize {
        self.beam
    }

    /// Starts a window: one alive beam with no tokens.
    pub fn reset(&mut self) {
        self.tokens[0].clear();
        self.scores[0] = 0.0;
        self.alive = 1;
        self.finished_len = 0;
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
        if last || self.finished_len >= self.beam {
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

    /// The best finished hypothesis by `score / len` (length penalty 1): its tokens and its
    /// cumulative log-probability. `None` if nothing finished.
    pub fn best(&self) -> Option<(&[u32], f32)> {
        let mut best: Option<(usize, f32)> = None;
        for (i, (tokens, score)) in self.finished[..self.finished_len].iter().enumerate() {
            let normalised = score / tokens.len() as f32;
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
}
