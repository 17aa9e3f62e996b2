//! Perplexity as llama-perplexity defines it: the text (tokenized with BOS if the model adds
//! one) is cut into chunks of `n_ctx` tokens; each chunk runs from an empty cache (its first
//! token replaced by BOS when the model adds one), and the second half of each chunk is
//! scored: the mean negative log-likelihood of each token given the ones before it.

use crate::error::{Error, Result};
use crate::model::{KvCache, Model, State};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct PerplexityResult {
    pub perplexity: f64,
    pub chunks: usize,
    /// Tokens scored.
    pub tokens: usize,
}

/// -log softmax(logits)[target], in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    -(logits[target as usize] as f64 - max - sum.ln())
}

/// The perplexity of `text` over its chunks of `n_ctx` tokens, or over the first
/// `max_chunks` of them (llama-perplexity's `--chunks`); `on_chunk(done, chunks, ppl so far)`
/// after each.
pub fn perplexity(
    model: &Model,
    tok: &Tokenizer,
    text: &str,
    n_ctx: usize,
    max_chunks: Option<usize>,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityResult> {
    if n_ctx < 4 {
        return Err(Error::Invalid(format!("-c {n_ctx}: the context must be at least 4 tokens")));
    }
    let mut tokens = tok.encode(text, true, false);
    if tokens.len() < 2 * n_ctx {
        return Err(Error::Invalid(format!(
            "the text is {} tokens; perplexity with -c {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_chunks = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
    if n_chunks == 0 {
        return Err(Error::Invalid("--chunks 0: no chunk to score".into()));
    }
    let vocab = model.config.vocab_size;
    let first = n_ctx / 2;
    let mut cache = KvCache::new(&model.config, n_ctx);
    let mut state = State::new(&model.config, n_ctx);
    let mut logits = Vec::with_capacity(n_ctx * vocab);
    let (mut total, mut count) = (0f64, 0usize);
    for c in 0..n_chunks {
        let start = c * n_ctx;
        let mut chunk = tokens[start..start + n_ctx].to_vec();
        if tok.add_bos() {
            if let Some(bos) = tok.bos() {
                chunk[0] = bos;
                tokens[start] = bos;
            }
        }
        cache.clear();
        logits.clear();
        model.forward(&chunk, &mut cache, &mut state, Some(&mut logits))?;
        for j in first..n_ctx - 1 {
            total += nll(&logits[j * vocab..(j + 1) * vocab], tokens[start + j + 1]);
            count += 1;
        }
        on_chunk(c + 1, n_chunks, (total / count as f64).exp());
    }
    Ok(PerplexityResult { perplexity: (total / count as f64).exp(), chunks: n_chunks, tokens: count })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let l = vec![0.5f32; 1000];
        assert!((super::nll(&l, 3) - (1000f64).ln()).abs() < 1e-9);
        let mut peaked = vec![0f32; 10];
        peaked[2] = 100.0;
        assert!(super::nll(&peaked, 2) < 1e-9);
    }
}
