//! Bad models and bad prompts: each is a one-line `error:` and exit code 1, never a crash.

mod common;

use std::path::{Path, PathBuf};

use ferrite::gguf::{GgufFile, GgufWriter, Value};
use ferrite::kernels::GgmlType;
use ferrite::synth::{synth, FileType, Shape};

const SMALL: Shape = Shape {
    name: "test-small",
    dim: 64,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    ffn: 128,
    vocab: 300,
    rope_base: 10000.0,
    tied: false,
    ctx: 256,
};

fn small_model(dir: &Path) -> PathBuf {
    let p = dir.join("small.gguf");
    synth(&SMALL, FileType::Plain(GgmlType::Q8_0), &p, None, 7).unwrap();
    p
}

type EditKv<'a> = &'a dyn Fn(&str, &Value) -> Option<Value>;
type EditTensor<'a> = &'a dyn Fn(&str, &[u64]) -> Option<Vec<u64>>;

/// Copy a GGUF, letting `edit_kv` change or drop metadata and `edit_t` reshape or drop tensors.
fn rewrite(src: &Path, dst: &Path, edit_kv: EditKv, edit_t: EditTensor) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &f.gguf.metadata {
        if let Some(v) = edit_kv(k, v) {
            w.add(k, v);
        }
    }
    let mut data = Vec::new();
    for t in &f.gguf.tensors {
        if let Some(dims) = edit_t(&t.name, &t.dims) {
            w.add_tensor(&t.name, &dims, t.ty);
            data.push(f.tensor_data(t).to_vec());
        }
    }
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    std::fs::write(dst, w.to_bytes(&refs)).unwrap();
}

fn run(model: &Path, extra: &[&str]) -> std::process::Output {
    common::ferrite()
        .arg("run")
        .arg("-m")
        .arg(model)
        .args(["-n", "4", "--temp", "0"])
        .args(extra)
        .output()
        .unwrap()
}

fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "{err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn a_missing_file_is_one_line_naming_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&dir.path().join("absent.gguf"), &["-p", "hello"]);
    assert_one_line_error(&out, "cannot open");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent.gguf"), "{err:?}");
    // ENOENT, as Linux and macOS number it: the reason once, not once per cause.
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err:?}");
}

#[test]
fn a_small_synthetic_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let out = run(&m, &["-p", "hello"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("generated:") && err.contains("tokens/s"), "{err}");
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let bad = dir.path().join("bad.gguf");
    rewrite(&m, &bad, &|_, v| Some(v.clone()), &|n, d| (n != "blk.1.ffn_up.weight").then(|| d.to_vec()));
    assert_one_line_error(&run(&bad, &["-p", "hi"]), "blk.1.ffn_up.weight");
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let bad = dir.path().join("bad.gguf");
    // attn_k is [64, 32]; [32, 64] holds the same bytes in the wrong shape.
    rewrite(&m, &bad, &|_, v| Some(v.clone()), &|n, d| {
        Some(if n == "blk.0.attn_k.weight" { vec![d[1], d[0]] } else { d.to_vec() })
    });
    assert_one_line_error(&run(&bad, &["-p", "hi"]), "blk.0.attn_k.weight");
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let bad = dir.path().join("bad.gguf");
    rewrite(
        &m,
        &bad,
        &|k, v| Some(if k == "general.architecture" { Value::String("mamba".into()) } else { v.clone() }),
        &|_, d| Some(d.to_vec()),
    );
    assert_one_line_error(&run(&bad, &["-p", "hi"]), "mamba");
}

#[test]
fn impossible_head_count() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let bad = dir.path().join("bad.gguf");
    rewrite(
        &m,
        &bad,
        &|k, v| Some(if k == "llama.attention.head_count_kv" { Value::U32(3) } else { v.clone() }),
        &|_, d| Some(d.to_vec()),
    );
    assert_one_line_error(&run(&bad, &["-p", "hi"]), "KV heads");
}

#[test]
fn bad_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    assert_one_line_error(&run(&m, &["-p", ""]), "empty");
    let f = dir.path().join("prompt.txt");
    std::fs::write(&f, b"abc \xff\xfe def").unwrap();
    assert_one_line_error(&run(&m, &["-f", f.to_str().unwrap()]), "prompt file");
    let long = "word ".repeat(400);
    assert_one_line_error(&run(&m, &["-p", &long, "-c", "64"]), "context");
    let out = common::ferrite().args(["run", "-m"]).arg(&m).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no prompt is a usage error");
}

/// llama.cpp's special values of the sampling options are accepted with its meanings, and
/// the values around them rejected in one line.
#[test]
fn llama_cpp_sampling_values() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let cmd = |extra: &[&str]| {
        let args = ["run", "-p", "hello", "-n", "4", "-m", m.to_str().unwrap()];
        common::ferrite().args(args).args(extra).output().unwrap()
    };
    let text = |extra: &[&str]| {
        let out = cmd(extra);
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    // A negative temperature is greedy: the same text as --temp 0.
    assert_eq!(text(&["--temp", "-1", "--seed", "5"]), text(&["--temp", "0"]));
    // -1 seeds from the clock; top-k at or below 0 keeps every token; -1 repeats over all.
    text(&[
        "--temp",
        "0.7",
        "--seed",
        "-1",
        "--top-k",
        "-1",
        "--repeat-last-n",
        "-1",
        "--repeat-penalty",
        "1.1",
    ]);
    // The same seed, the same sample.
    let sampled = &["--temp", "1.5", "--top-k", "0", "--seed", "18446744073709551615"];
    assert_eq!(text(sampled), text(sampled));
    assert_one_line_error(&cmd(&["--seed", "-2"]), "--seed -2");
    assert_one_line_error(&cmd(&["--seed", "18446744073709551616"]), "--seed");
    assert_one_line_error(&cmd(&["--repeat-last-n", "-2"]), "--repeat-last-n -2");
    assert_one_line_error(&cmd(&["--temp", "inf"]), "--temp");
}

/// `bench -p A,B -n C` runs one test per length, prefills first, as llama-bench; bad lists
/// are usage errors.
#[test]
fn bench_takes_lists_of_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let bench = |lists: &[&str]| {
        let mut cmd = common::ferrite();
        cmd.args(["bench", "-r", "1", "-t", "1", "--json", "-m", m.to_str().unwrap()])
            .args(lists)
            .output()
            .unwrap()
    };
    let out = bench(&["-p", "8,4,0", "-n", "3,2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tests: Vec<&str> =
        v["results"].as_array().unwrap().iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp8", "pp4", "tg3", "tg2"]);
    assert_eq!(bench(&["-p", "8,x"]).status.code(), Some(2));
    assert_one_line_error(&bench(&["-p", "8,2000000"]), "-p and -n");
}

/// `run -f` as llama.cpp's: the file's one trailing newline dropped, escapes processed
/// (unless --no-escape), so it runs what `-p` with the same text does.
#[test]
fn prompt_files_as_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(dir.path());
    let f = dir.path().join("prompt.txt");
    // The text and the prompt's token count (the synthetic model's vocabulary is bytes and
    // short pieces, so a count tells a newline from a backslash and an n).
    let gen = |args: &[&str]| {
        let out = run(&m, args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {err}");
        let prompt =
            err.lines().find(|l| l.starts_with("prompt:")).unwrap().split(',').next().unwrap().to_string();
        (out.stdout, prompt)
    };
    let file = |content: &str, extra: &[&str]| {
        std::fs::write(&f, content).unwrap();
        gen(&[&["-f", f.to_str().unwrap()][..], extra].concat())
    };
    assert_eq!(file("hello there\n", &[]), gen(&["-p", "hello there"]));
    assert_eq!(file(r"hello\nthere", &[]), gen(&["-p", "hello\nthere"]));
    assert_eq!(file(r"hello\nthere", &["--no-escape"]), gen(&["-p", r"hello\nthere", "--no-escape"]));
    // llama.cpp's -e (escapes on, the default) is accepted.
    assert_eq!(gen(&["-e", "-p", r"hello\nthere"]), gen(&["-p", "hello\nthere"]));
    assert_ne!(
        gen(&["-p", "hello\nthere"]).1,
        gen(&["-p", r"hello\nthere", "--no-escape"]).1,
        "{:?}",
        gen(&["-p", "hello\nthere"]).1
    );
}
