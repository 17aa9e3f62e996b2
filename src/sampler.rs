//! Token sampling with llama.cpp's defaults and order: repetition penalty, top-k, top-p,
//! min-p, temperature, then a draw from the softmax. `temp <= 0` is greedy.

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A seed from the clock and the process id, for runs without `--seed` (or with -1).
pub fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(32)
}

/// PCG-style generator (splitmix64): small, fast, reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    // Scratch reused from token to token: sampling allocates nothing once warm.
    candidates: Vec<(u32, f32)>,
    seen: Vec<u32>,
    weights: Vec<f32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = Rng::new(config.seed);
        Sampler { config, rng, candidates: Vec::new(), seen: Vec::new(), weights: Vec::new() }
    }

    /// Pick the next token from `logits` (modified in place by the penalty), given the
    /// tokens so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = &self.config;
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
            let seen = &mut self.seen;
            seen.clear();
            seen.extend_from_slice(recent);
            seen.sort_unstable();
            seen.dedup();
            for &t in seen.iter() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
                }
            }
        }
        if c.temp <= 0.0 {
            return argmax(logits);
        }
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l)));
        if cand.is_empty() {
            return 0;
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, by_logit);
            cand.truncate(c.top_k);
        }
        cand.sort_unstable_by(by_logit);
        let max = cand[0].1;
        // Probabilities at temperature 1 (unnormalised), for top-p and min-p.
        let probs = &mut self.weights;
        probs.clear();
        probs.extend(cand.iter().map(|&(_, l)| (l - max).exp()));
        let total: f32 = probs.iter().sum();
        let mut keep = cand.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p / total;
                if acc >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = c.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        cand.truncate(keep.max(1));
        let weights = &mut self.weights;
        weights.clear();
        weights.extend(cand.iter().map(|&(_, l)| ((l - max) / c.temp).exp()));
        let sum: f32 = weights.iter().sum();
        let mut r = self.rng.f32() * sum;
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the first, on ties), as greedy decoding picks.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_max() {
        let mut s = Sampler::new(SamplerConfig { temp: 0.0, ..Default::default() });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(SamplerConfig { temp: 0.0, repeat_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0, -1.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let mut s = Sampler::new(SamplerConfig { top_k: 1, ..Default::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
        }
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let cfg =
            SamplerConfig { seed: 42, top_k: 0, top_p: 1.0, min_p: 0.0, temp: 1.5, ..Default::default() };
        let draw = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..50).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        let a = draw(&cfg);
        assert_eq!(a, draw(&cfg));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 3, "a hot sampler varies");
    }

    #[test]
    fn min_p_cuts_unlikely_tokens() {
        let mut s =
            Sampler::new(SamplerConfig { min_p: 0.5, top_k: 0, top_p: 1.0, temp: 1.0, ..Default::default() });
        for _ in 0..50 {
            // exp(-5) is far below half of the best token's probability.
            assert_ne!(s.sample(&mut [5.0, 0.0, 5.0], &[]), 1);
        }
    }
}
