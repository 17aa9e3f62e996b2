//! `ferrite chat` driven through a pipe: one message per line, answers on stdout, `/stats`
//! lines on stderr.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use ferrite::chat::{prompt_tokens, ChatTemplate, Message};
use ferrite::gguf::GgufFile;
use ferrite::tokenizer::Tokenizer;

fn chat(args: &[&str], input: &str) -> Output {
    let mut cmd: Command = common::ferrite();
    cmd.arg("chat").arg("-m").arg(common::smollm2()).args(["--temp", "0"]).args(args);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (context used, last turn's prompt tokens, last turn's generated tokens) of each
/// `/stats` line.
fn stats(o: &Output) -> Vec<(usize, Option<usize>, Option<usize>)> {
    let num = |s: &str, after: &str| -> Option<usize> {
        let rest = &s[s.find(after)? + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("[stats]"))
        .map(|l| (num(l, "context ").unwrap(), num(l, "prompt "), num(l, "), ")))
        .collect()
}

fn smollm2() -> (GgufFile, Tokenizer) {
    let f = GgufFile::open(common::smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&f.gguf).unwrap();
    (f, tok)
}

#[test]
fn second_turn_prefills_only_its_own_tokens() {
    let out = chat(&["-c", "512", "-n", "48"], "What is 2+2?\n/stats\nWhat is 3+3?\n/stats\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let answers = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(answers.lines().count(), 2, "{answers}");

    let (f, tok) = smollm2();
    let t = ChatTemplate::load(None, &f.gguf, &tok).unwrap();
    let first = prompt_tokens(&tok, &t.render(&[Message::new("user", "What is 2+2?")], true).unwrap());
    // The first answer ends at the end-of-turn token, which the template writes back
    // together with the next user turn: that is all the second turn feeds.
    let second = tok.encode(
        "<|im_end|>\n<|im_start|>user\nWhat is 3+3?<|im_end|>\n<|im_start|>assistant\n",
        false,
        true,
    );

    let s = stats(&out);
    assert_eq!(s.len(), 2, "{}", stderr(&out));
    let (ctx1, p1, g1) = (s[0].0, s[0].1.unwrap(), s[0].2.unwrap());
    let (ctx2, p2, g2) = (s[1].0, s[1].1.unwrap(), s[1].2.unwrap());
    assert_eq!(p1, first.len());
    assert!(g1 > 0 && g1 < 48, "the first answer should end by itself: {}", stderr(&out));
    assert_eq!(ctx1, p1 + g1);
    assert_eq!(p2, second.len(), "{}", stderr(&out));
    assert!(p2 < p1);
    assert_eq!(ctx2, ctx1 + p2 + g2);
}

#[test]
fn system_and_reset_commands() {
    let out = chat(
        &["-c", "512", "-n", "4"],
        "/system You are a pirate.\nHi\n/stats\n/reset\n/stats\nHi\n/stats\n/system\n/stats\n/help\n/nope\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (f, tok) = smollm2();
    let t = ChatTemplate::load(None, &f.gguf, &tok).unwrap();
    let pirate = [Message::new("system", "You are a pirate."), Message::new("user", "Hi")];
    let want = prompt_tokens(&tok, &t.render(&pirate, true).unwrap()).len();
    let s = stats(&out);
    assert_eq!(s.len(), 4, "{}", stderr(&out));
    assert_eq!(s[0].1, Some(want));
    assert_eq!(s[1].0, 0, "/reset empties the context");
    assert_eq!(s[2].1, Some(want), "/reset keeps the system prompt");
    assert_eq!(s[3].0, 0, "/system starts over");
    let err = stderr(&out);
    assert!(err.contains("/reset") && err.contains("unknown command /nope"), "{err}");
}

#[test]
fn full_context_is_reported_and_the_chat_goes_on() {
    let long = "word ".repeat(100);
    let out = chat(&["-c", "64", "-n", "4"], &format!("{long}\n/stats\nHi\n/stats\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("[context full") && err.contains("/reset"), "{err}");
    let s = stats(&out);
    assert_eq!(s[0], (0, None, None), "nothing was fed");
    assert!(s[1].0 > 0 && s[1].0 <= 64, "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn chat_template_override_and_errors() {
    let out = chat(&["-c", "512", "-n", "2", "--chat-template", "chatml"], "Hi\n/stats\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, tok) = smollm2();
    let want = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false, true).len();
    assert_eq!(stats(&out)[0].1, Some(want));

    let out = chat(&["--chat-template", "/no/such/file.jinja"], "Hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot read chat template /no/such/file.jinja"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jinja");
    std::fs::write(&broken, "{% for m in messages %}{{ m.content").unwrap();
    let out = chat(&["--chat-template", broken.to_str().unwrap()], "Hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: chat template"), "{}", stderr(&out));
}
