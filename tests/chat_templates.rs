//! Chat templates rendered with minijinja against the strings each template should give,
//! written out by hand from the template's text (tests/fixtures/chat-templates, SmolLM2's
//! own from its GGUF), and the multi-turn bookkeeping that feeds only the new turn.

mod common;

use ferrite::chat::{strftime, ChatError, ChatTemplate, Conversation, Message, BUILTIN_TEMPLATES};
use ferrite::gguf::{GgufFile, GgufWriter};
use ferrite::tokenizer::Tokenizer;

/// 2024-09-26 13:05:09 UTC.
const FIXED_TIME: i64 = 1_727_355_909;

fn template(file: &str, bos: &str, eos: &str) -> ChatTemplate {
    let path = common::fixture("chat-templates").join(file);
    let src = std::fs::read_to_string(&path).unwrap();
    let mut t = ChatTemplate::new(file, &src, bos, eos).unwrap();
    t.set_clock(Some(FIXED_TIME));
    t
}

/// A system prompt, one exchange and a new question.
fn with_system() -> Vec<Message> {
    vec![
        Message::new("system", "You are terse."),
        Message::new("user", "Hi!"),
        Message::new("assistant", "Hello."),
        Message::new("user", "What is 2+2?"),
    ]
}

fn one_question() -> Vec<Message> {
    vec![Message::new("user", "Hi!")]
}

fn smollm2() -> (GgufFile, Tokenizer) {
    let f = GgufFile::open(common::smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&f.gguf).unwrap();
    (f, tok)
}

#[test]
fn smollm2_own_template() {
    let (f, tok) = smollm2();
    let t = ChatTemplate::load(None, &f.gguf, &tok).unwrap();
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&one_question(), true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&one_question(), false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi!<|im_end|>\n"
    );
}

#[test]
fn llama_3_1() {
    let t = template("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
         You are terse.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        t.render(&one_question(), true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn llama_3_2_prints_the_date_of_strftime_now() {
    let mut t = template("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
    let want = |date: &str| {
        format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n\
             You are terse.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    };
    assert_eq!(t.render(&with_system(), true).unwrap(), want("26 Sep 2024"));
    // With the clock: today's date (read before and after, in case midnight passes).
    t.set_clock(None);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let before = strftime("%d %b %Y", now());
    let got = t.render(&with_system(), true).unwrap();
    let after = strftime("%d %b %Y", now());
    assert!(got == want(&before) || got == want(&after), "{got}");
}

#[test]
fn qwen_2_5() {
    let t = template("Qwen-Qwen2.5-7B-Instruct.jinja", "<|endoftext|>", "<|im_end|>");
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&one_question(), true).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn mistral_nemo() {
    let t = template("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>");
    // The system prompt goes into the last user turn; the template adds no generation prompt.
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        "<s>[INST]Hi![/INST]Hello.</s>[INST]You are terse.\n\nWhat is 2+2?[/INST]"
    );
    assert_eq!(t.render(&one_question(), true).unwrap(), "<s>[INST]Hi![/INST]");
    // Roles that do not alternate: the template's raise_exception becomes a typed error.
    let two_users = [Message::new("user", "a"), Message::new("user", "b")];
    match t.render(&two_users, true) {
        Err(ChatError::Template { detail, .. }) => {
            assert!(detail.contains("conversation roles must alternate"), "{detail}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn deepseek_r1_distill_llama() {
    let t = template(
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    );
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hi!<｜Assistant｜>Hello.<｜end▁of▁sentence｜>\
         <｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    );
    assert_eq!(
        t.render(&one_question(), true).unwrap(),
        "<｜begin▁of▁sentence｜><｜User｜>Hi!<｜Assistant｜><think>\n"
    );
    // Earlier answers lose their reasoning.
    let thought = [
        Message::new("user", "Hi!"),
        Message::new("assistant", "<think>\nA greeting.\n</think>\n\nHello."),
        Message::new("user", "Bye."),
    ];
    assert_eq!(
        t.render(&thought, false).unwrap(),
        "<｜begin▁of▁sentence｜><｜User｜>Hi!<｜Assistant｜>\n\nHello.<｜end▁of▁sentence｜><｜User｜>Bye."
    );
}

#[test]
fn smollm3_uses_python_string_methods() {
    let t = template("HuggingFaceTB-SmolLM3-3B.jinja", "<|im_start|>", "<|im_end|>");
    let header = |mode: &str, instructions: &str| {
        format!(
            "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nReasoning Mode: {mode}\n\n\
             ## Custom Instructions\n\n{instructions}\n\n<|im_end|>\n"
        )
    };
    assert_eq!(
        t.render(&with_system(), true).unwrap(),
        header("/think", "You are terse.")
            + "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n\
               <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // "/no_think" in the system prompt: replaced away, rstripped, and the answers get an
    // empty think block (lstrip("\n") of the answer).
    let no_think = [
        Message::new("system", "Be brief. /no_think  "),
        Message::new("user", "Hi!"),
        Message::new("assistant", "\n\nHello."),
        Message::new("user", "Bye."),
    ];
    assert_eq!(
        t.render(&no_think, true).unwrap(),
        header("/no_think", "Be brief.")
            + "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\nHello.<|im_end|>\n\
               <|im_start|>user\nBye.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"
    );
    let out = t.render(&one_question(), true).unwrap();
    assert!(out.starts_with(
        &header("/think", "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role")
            [..150]
    ));
    assert!(
        out.ends_with("conclusion.\n\n<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    );
}

#[test]
fn builtin_templates() {
    let expect = [
        ("chatml", "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
        ("llama3", "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("llama2", "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]"),
        ("gemma", "<s><start_of_turn>user\nYou are terse.<end_of_turn>\n<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"),
        ("phi3", "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n"),
    ];
    assert_eq!(expect.len(), BUILTIN_TEMPLATES.len());
    for ((name, src), (want_name, want)) in BUILTIN_TEMPLATES.iter().zip(expect) {
        assert_eq!(*name, want_name);
        let t = ChatTemplate::new(name, src, "<s>", "</s>").unwrap();
        assert_eq!(t.render(&with_system(), true).unwrap(), want, "{name}");
    }
}

#[test]
fn template_choice_and_errors() {
    let (f, tok) = smollm2();
    let chatml = ChatTemplate::load(Some("chatml"), &f.gguf, &tok).unwrap();
    assert_eq!(
        chatml.render(&one_question(), true).unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    let file = common::fixture("chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja");
    let qwen = ChatTemplate::load(Some(file.to_str().unwrap()), &f.gguf, &tok).unwrap();
    assert!(qwen.render(&one_question(), true).unwrap().contains("You are Qwen"));

    assert!(matches!(
        ChatTemplate::load(Some("/no/such/template.jinja"), &f.gguf, &tok),
        Err(ChatError::Io { .. })
    ));
    let empty = ferrite::gguf::Gguf::parse(&GgufWriter::new().to_bytes(&[])).unwrap();
    let e = ChatTemplate::load(None, &empty, &tok).err().unwrap();
    assert!(matches!(e, ChatError::NoTemplate));
    assert!(e.to_string().contains("--chat-template"), "{e}");

    // Does not parse.
    assert!(matches!(ChatTemplate::new("t", "{% for %}", "", ""), Err(ChatError::Template { .. })));
    // Parses, fails on use: no messages to index, a missing filter, a bad operand.
    let t = ChatTemplate::new("t", "{{ messages[0].role | nosuchfilter }}", "", "").unwrap();
    assert!(matches!(t.check(), Err(ChatError::Template { .. })));
    let t = ChatTemplate::new("t", "{{ messages[0]['content'] + 1 }}", "", "").unwrap();
    assert!(matches!(t.render(&one_question(), true), Err(ChatError::Template { .. })));
}

#[test]
fn conversation_feeds_only_the_new_turn() {
    let (f, tok) = smollm2();
    let t = ChatTemplate::load(None, &f.gguf, &tok).unwrap();
    let mut conv = Conversation::new(Some("You are terse.".into()));

    let first = conv.begin_turn("Hi!", &[], &t, &tok).unwrap();
    assert!(!first.continues);
    let rendered =
        t.render(&[Message::new("system", "You are terse."), Message::new("user", "Hi!")], true).unwrap();
    assert_eq!(first.tokens, ferrite::chat::prompt_tokens(&tok, &rendered));
    let session: Vec<u32> = first.tokens.clone(); // what a session would now hold (+ the answer)
    conv.end_turn(first, "Hello.", "Hello.");

    let second = conv.begin_turn("What is 2+2?", &session, &t, &tok).unwrap();
    assert!(second.continues);
    assert_eq!(
        second.tokens,
        tok.encode(
            "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            false,
            true
        )
    );
    // An answer cut short (its last token not fed) is finished in the next prefill.
    conv.end_turn(second, "4, of course", "4, of");
    let third = conv.begin_turn("Thanks.", &session, &t, &tok).unwrap();
    assert!(third.continues);
    assert_eq!(
        third.tokens,
        tok.encode(
            " course<|im_end|>\n<|im_start|>user\nThanks.<|im_end|>\n<|im_start|>assistant\n",
            false,
            true
        )
    );
    assert_eq!(conv.messages().len(), 6);

    // A turn that cannot run is dropped, and the next one starts from scratch.
    conv.abandon_turn();
    assert_eq!(conv.messages().len(), 5);
    let again = conv.begin_turn("Thanks.", &session, &t, &tok).unwrap();
    assert!(!again.continues);
    assert_eq!(again.tokens, ferrite::chat::prompt_tokens(&tok, &t.render(&conv.messages(), true).unwrap()));
}

#[test]
fn conversation_starts_over_when_the_template_rewrites_answers() {
    let (_, tok) = smollm2();
    // Llama 3 trims answers: a generated trailing space is gone from the next rendering.
    let t = ChatTemplate::new("llama3", BUILTIN_TEMPLATES[1].1, "", "").unwrap();
    let mut conv = Conversation::new(None);
    let first = conv.begin_turn("Hi!", &[], &t, &tok).unwrap();
    conv.end_turn(first, "Hello. ", "Hello. ");
    let second = conv.begin_turn("Bye.", &[1, 2, 3], &t, &tok).unwrap();
    assert!(!second.continues);
    assert_eq!(second.tokens, ferrite::chat::prompt_tokens(&tok, &t.render(&conv.messages(), true).unwrap()));
}
