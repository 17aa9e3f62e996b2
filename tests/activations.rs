//! `--dump-activations` on SmolLM2 layer 0 against an independent numpy computation of that
//! layer from the weights as the `gguf` package dequantizes them (tests/py/layer0_check.py,
//! f64 arithmetic, exact softmax attention).
//!
//! Tolerances (relative L2 error of each array): the embedding row is a dequantization, so
//! exact (1e-6); the first RMSNorm only rounds in f32 (1e-5). Every matrix product quantizes
//! its input to 8 bits per block (a step of amax/127 per element): on these layers that moves
//! outputs by up to ~1.3% (measured: 0.2-1.3%), and the f16 KV cache adds ~0.1% to attention,
//! so everything from the first matmul on must be within 2.5%. A wrong step (RoPE on the
//! wrong pairs, a missing norm, a transposed matrix) is off by tens of percent.

mod common;

#[test]
fn layer0_matches_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::ferrite()
        .args(["run", "-m"])
        .arg(common::smollm2())
        .args(["-p", "The capital of France is a city", "-n", "1", "--temp", "0", "--layers", "0"])
        .arg("--dump-activations")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let errors = common::python_json("layer0_check.py", &[&common::smollm2(), dir.path()]);
    let errors = errors.as_object().unwrap();
    eprintln!("{errors:#?}");
    let steps = [
        "attn_norm.in",
        "attn_norm.out",
        "attn_q.out",
        "attn_k.out",
        "attn_v.out",
        "rope_q.out",
        "rope_k.out",
        "attention.out",
        "attn_output.out",
        "ffn_inp",
        "ffn_norm.out",
        "ffn_gate.out",
        "ffn_up.out",
        "swiglu.out",
        "ffn_down.out",
        "layer.out",
    ];
    for step in steps {
        let e = errors.get(step).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{step} was not dumped"));
        let tol = match step {
            "attn_norm.in" => 1e-6,
            "attn_norm.out" => 1e-5,
            _ => 0.025,
        };
        assert!(e <= tol, "{step}: relative error {e} > {tol}");
    }
}
