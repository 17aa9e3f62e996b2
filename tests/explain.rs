//! `explain`'s byte and FLOP counts against values worked out by hand.

mod common;

use ferrite::explain::token_cost;
use ferrite::gguf::{GgufWriter, Value};
use ferrite::kernels::GgmlType;
use ferrite::model::Model;

#[test]
fn smollm2_costs_by_hand() {
    let m = Model::open(common::smollm2()).unwrap();
    let c = token_cost(&m, 100);
    // Q4_1 rows of 576: 18 blocks x 20 bytes = 360 bytes; of 1536: 48 x 20 = 960 bytes.
    let layer = 576 * 360 // attn_q: 576 rows
        + 2 * 192 * 360 // attn_k, attn_v: 192 rows each
        + 576 * 360 // attn_output
        + 2 * 1536 * 360 // ffn_gate, ffn_up: 1536 rows of 576
        + 576 * 960 // ffn_down: 576 rows of 1536
        + 2 * 576 * 4; // two f32 norms
                       // Tied output: token_embd, Q8_0, 49152 rows of 576 = 18 blocks x 34 bytes.
    let output = 49152 * 18 * 34;
    let embedding_row = 18 * 34;
    let final_norm = 576 * 4;
    assert_eq!(c.weight_bytes, 30 * layer + output + embedding_row + final_norm);
    assert_eq!(c.weight_bytes, 96_577_380);
    // KV: 30 layers x (K + V) x 3 KV heads x 64 x 2 bytes, for 101 positions.
    assert_eq!(c.kv_bytes_per_token, 30 * 2 * 192 * 2);
    assert_eq!(c.kv_bytes, 23_040 * 101);
    assert_eq!(c.kv_bytes_full_context, 23_040 * 8192);
    let macs_layer = 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3;
    assert_eq!(c.matmul_flops, 2 * (30 * macs_layer + 576 * 49152));
    assert_eq!(c.attention_flops, 4 * 30 * 9 * 64 * 101);
}

/// The Llama-3-8B shape as a Q4_0 file whose data is a sparse hole (nothing is read).
#[test]
fn llama3_8b_costs_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("8b.gguf");
    let (dim, layers, heads, kv_heads, ffn, vocab) = (4096u64, 32usize, 32u32, 8u32, 14336u64, 128256u64);
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add("llama.block_count", Value::U32(layers as u32));
    w.add("llama.context_length", Value::U32(8192));
    w.add("llama.embedding_length", Value::U32(dim as u32));
    w.add("llama.feed_forward_length", Value::U32(ffn as u32));
    w.add("llama.attention.head_count", Value::U32(heads));
    w.add("llama.attention.head_count_kv", Value::U32(kv_heads));
    w.add("llama.rope.freq_base", Value::F32(500000.0));
    w.add_tensor("token_embd.weight", &[dim, vocab], GgmlType::Q4_0);
    for l in 0..layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        w.add_tensor(&n("attn_norm"), &[dim], GgmlType::F32);
        w.add_tensor(&n("attn_q"), &[dim, dim], GgmlType::Q4_0);
        w.add_tensor(&n("attn_k"), &[dim, 1024], GgmlType::Q4_0);
        w.add_tensor(&n("attn_v"), &[dim, 1024], GgmlType::Q4_0);
        w.add_tensor(&n("attn_output"), &[dim, dim], GgmlType::Q4_0);
        w.add_tensor(&n("ffn_norm"), &[dim], GgmlType::F32);
        w.add_tensor(&n("ffn_gate"), &[dim, ffn], GgmlType::Q4_0);
        w.add_tensor(&n("ffn_up"), &[dim, ffn], GgmlType::Q4_0);
        w.add_tensor(&n("ffn_down"), &[ffn, dim], GgmlType::Q4_0);
    }
    w.add_tensor("output_norm.weight", &[dim], GgmlType::F32);
    w.add_tensor("output.weight", &[dim, vocab], GgmlType::Q6_K);
    let mut f = std::fs::File::create(&path).unwrap();
    let header = w.write_header(&mut f).unwrap();
    let data: u64 = (0..w.tensor_count()).map(|i| w.tensor_size(i).next_multiple_of(32)).sum();
    f.set_len(header + data).unwrap();
    drop(f);

    // (Repacked as a load does, without the copy cache: 4 GB of copies of a test file.)
    let m = Model::load_with(ferrite::gguf::GgufFile::open(&path).unwrap(), true).unwrap();
    let c = token_cost(&m, 4095);
    // Q4_0: 18 bytes per 32 weights; Q6_K: 210 bytes per 256.
    let q4 = |n: u64| n / 32 * 18;
    let layer = q4(dim * dim) * 2 + q4(dim * 1024) * 2 + q4(dim * ffn) * 3 + 2 * dim * 4;
    let expect = layers as u64 * layer + vocab * dim / 256 * 210 + q4(dim) + dim * 4;
    assert_eq!(c.weight_bytes, expect);
    assert_eq!(c.weight_bytes, 4_357_875_968);
    assert_eq!(c.kv_bytes, 32 * 2 * 1024 * 2 * 4096);
    let macs = layers as u64 * (dim * dim * 2 + dim * 1024 * 2 + dim * ffn * 3) + dim * vocab;
    assert_eq!(c.matmul_flops, 2 * macs);
    assert_eq!(c.attention_flops, 4 * 32 * 32 * 128 * 4096);
}

/// The profile's bytes column: for one decode step, each matrix op read exactly its
/// weights' bytes (summed over layers), and the output op the output matrix.
#[test]
fn profile_bytes_equal_weight_sizes() {
    use ferrite::model::{KvCache, Op, Profile, State};
    let m = Model::open(common::smollm2()).unwrap();
    let mut cache = KvCache::new(&m.config, 16);
    let mut state = State::new(&m.config, 16);
    m.forward(&[504, 3575], &mut cache, &mut state, None).unwrap();
    state.prof_decode = Some(Box::<Profile>::default());
    m.forward(&[282], &mut cache, &mut state, None).unwrap();
    let p = state.prof_decode.take().unwrap();
    let f = &m.file.gguf;
    let sum = |suffix: &str| -> u64 {
        (0..30).map(|l| f.tensor(&format!("blk.{l}.{suffix}.weight")).unwrap().size).sum()
    };
    let stat = |op: Op| p.ops[ferrite::model::profile::OPS.iter().position(|&o| o == op).unwrap()];
    for (op, name) in [
        (Op::AttnQ, "attn_q"),
        (Op::AttnK, "attn_k"),
        (Op::AttnV, "attn_v"),
        (Op::AttnOutput, "attn_output"),
        (Op::FfnGate, "ffn_gate"),
        (Op::FfnUp, "ffn_up"),
        (Op::FfnDown, "ffn_down"),
    ] {
        assert_eq!(stat(op).bytes, sum(name), "{name}");
        assert_eq!(stat(op).calls, 30, "{name}");
    }
    assert_eq!(stat(Op::Output).bytes, f.tensor("token_embd.weight").unwrap().size);
    assert_eq!(p.tokens, 1);
    // The ops cover the step: their times add up to the wall time of the forward call.
    let (ops, wall) = (p.total().as_secs_f64(), p.wall.as_secs_f64());
    assert!(ops <= wall * 1.001 && ops >= wall * 0.5, "ops {ops} s, wall {wall} s");
}
