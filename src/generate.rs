//! A generation session: a model, its KV cache and scratch, and the tokens in the cache.
//! `run`, `chat`, `serve` and `bench` all drive one of these.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{KvCache, Model, Op, State};
use crate::sampler::Sampler;

pub struct Session<'m> {
    pub model: &'m Model,
    pub cache: KvCache,
    pub state: State,
    /// Every token in the cache, in order.
    pub tokens: Vec<u32>,
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    /// Single-token forward passes after the prompt, and their time.
    pub decode_steps: usize,
    pub decode_time: Duration,
}

impl Stats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    pub fn decode_tps(&self) -> f64 {
        self.decode_steps as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    EndOfGeneration,
    Length,
    ContextFull,
    Cancelled,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, n_ctx: usize) -> Session<'m> {
        Session {
            model,
            cache: KvCache::new(&model.config, n_ctx),
            state: State::new(&model.config, n_ctx),
            tokens: Vec::new(),
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    pub fn reset(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }

    /// Run `tokens` through the model after what is cached; the logits of the last one are
    /// left in `self.state.logits`.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        if self.tokens.len() + tokens.len() > self.n_ctx() {
            return Err(Error::Invalid(format!(
                "{} tokens do not fit: {} of the context of {} are used",
                tokens.len(),
                self.tokens.len(),
                self.n_ctx()
            )));
        }
        self.model.forward(tokens, &mut self.cache, &mut self.state, None)?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Prefill `prompt`, then sample up to `max_tokens` (None: until the context is full),
    /// calling `on_token` with each new token; it returns false to stop early.
    /// Stops at an end-of-generation token unless `ignore_eos`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: Option<usize>,
        sampler: &mut Sampler,
        is_eog: &dyn Fn(u32) -> bool,
        ignore_eos: bool,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<(Stop, Stats)> {
        let mut stats = Stats { prompt_tokens: prompt.len(), ..Default::default() };
        let t = Instant::now();
        self.feed(prompt)?;
        stats.prompt_time = t.elapsed();
        if prompt.is_empty() && self.tokens.is_empty() {
            return Err(Error::Invalid("nothing to generate from: the prompt is empty".into()));
        }
        loop {
            if max_tokens.is_some_and(|m| stats.generated_tokens >= m) {
                return Ok((Stop::Length, stats));
            }
            let t = self.state.prof_decode.as_ref().map(|_| Instant::now());
            let next = sampler.sample(&mut self.state.logits, &self.tokens);
            if let (Some(p), Some(t)) = (self.state.prof_decode.as_mut(), t) {
                p.add(Op::Sampling, t.elapsed(), 0, 0);
            }
            if is_eog(next) && !ignore_eos {
                return Ok((Stop::EndOfGeneration, stats));
            }
            stats.generated_tokens += 1;
            if !on_token(next) {
                return Ok((Stop::Cancelled, stats));
            }
            if self.tokens.len() >= self.n_ctx() {
                return Ok((Stop::ContextFull, stats));
            }
            if max_tokens.is_some_and(|m| stats.generated_tokens >= m) {
                return Ok((Stop::Length, stats));
            }
            let t = Instant::now();
            self.feed(&[next])?;
            stats.decode_time += t.elapsed();
            stats.decode_steps += 1;
        }
    }
}
