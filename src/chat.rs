//! Chat: the model's chat template, conversations kept in a session's KV cache, and the
//! interactive `ferrite chat` loop.
//!
//! A template is the GGUF's `tokenizer.chat_template` (Jinja, written for Hugging Face's
//! `apply_chat_template`), rendered with minijinja set up as transformers sets up Jinja2:
//! `trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, and
//! Python's string and dict methods (minijinja-contrib's `pycompat`). A template comes from
//! a file we do not trust, so rendering runs on a fuel budget.
//!
//! Multi-turn chat renders the whole conversation each turn and feeds the model only the
//! text after what the KV cache already holds (as llama.cpp's `common_chat_format_single`):
//! the cache holds the tokens of `cached`, the previous prompt plus the answer as generated.
//! When a template renders earlier turns differently (some strip or rewrite answers), the
//! text no longer starts with `cached` and the whole conversation is prefilled again.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{Environment, ErrorKind, Value};

use crate::generate::{Session, Stats, Stop};
use crate::gguf::Gguf;
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Template instructions (and bytes produced, per 64) one render may spend: far above any
/// real template on a full context, far below an endless loop.
const FUEL: u64 = 50_000_000;

/// Templates ferrite knows by name, for models whose file has none (or a broken one).
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "chatml",
        "{%- for message in messages %}{{ '<|im_start|>' + message.role + '\\n' + message.content + \
         '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}\
         {%- endif %}",
    ),
    (
        "llama3",
        "{{- bos_token }}{%- for message in messages %}{{ '<|start_header_id|>' + message.role + \
         '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}{%- endfor %}\
         {%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\
         {%- endif %}",
    ),
    (
        "llama2",
        "{%- if messages and messages[0].role == 'system' %}{%- set system = messages[0].content %}\
         {%- set messages = messages[1:] %}{%- endif %}{%- for message in messages %}\
         {%- if message.role == 'user' %}{{ bos_token + '[INST] ' }}{%- if loop.first and system is defined %}\
         {{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{%- endif %}{{ message.content | trim + ' [/INST]' }}\
         {%- elif message.role == 'assistant' %}{{ ' ' + message.content | trim + ' ' + eos_token }}\
         {%- endif %}{%- endfor %}",
    ),
    (
        "gemma",
        "{{- bos_token }}{%- for message in messages %}{%- set role = 'model' if message.role == 'assistant' \
         else 'user' %}{{ '<start_of_turn>' + role + '\\n' + message.content | trim + '<end_of_turn>\\n' }}\
         {%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}",
    ),
    (
        "phi3",
        "{%- for message in messages %}{{ '<|' + message.role + '|>\\n' + message.content + '<|end|>\\n' }}\
         {%- endfor %}{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}",
    ),
];

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(
        "the model has no chat template (tokenizer.chat_template): pass --chat-template with a Jinja \
         file or one of {}",
        builtin_names()
    )]
    NoTemplate,
    /// Neither a built-in name nor a readable file.
    #[error("cannot read chat template {path}: {err} (built-in templates: {})", builtin_names())]
    Io { path: PathBuf, err: std::io::Error },
    /// The template does not parse, or failed (`raise_exception`, an undefined value...)
    /// while rendering.
    #[error("chat template ({name}): {detail}")]
    Template { name: String, detail: String },
}

fn builtin_names() -> String {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where it came from, for error messages: the model, a built-in name or a file.
    name: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compile `source`. `bos_token` and `eos_token` are the texts templates may print.
    pub fn new(
        name: &str,
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatError> {
        let err = |e: minijinja::Error| ChatError::Template { name: name.into(), detail: describe(&e) };
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(err)?);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
        });
        env.add_template_owned("chat_template", source.to_string()).map_err(err)?;
        let mut t =
            ChatTemplate { env, name: name.into(), bos_token: bos_token.into(), eos_token: eos_token.into() };
        t.set_clock(None);
        Ok(t)
    }

    /// The template of a model: `spec` (a built-in name or a Jinja file) if given, else the
    /// file's `tokenizer.chat_template`.
    pub fn load(spec: Option<&str>, gguf: &Gguf, tok: &Tokenizer) -> Result<ChatTemplate, ChatError> {
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
        let (bos, eos) = (text(tok.bos()), text(tok.eos()));
        match spec {
            Some(s) => {
                if let Some((name, src)) = BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == s) {
                    return ChatTemplate::new(name, src, &bos, &eos);
                }
                let path = Path::new(s);
                let src =
                    std::fs::read_to_string(path).map_err(|err| ChatError::Io { path: path.into(), err })?;
                ChatTemplate::new(s, &src, &bos, &eos)
            }
            None => match gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
                Some(src) => ChatTemplate::new("the model's tokenizer.chat_template", src, &bos, &eos),
                None => Err(ChatError::NoTemplate),
            },
        }
    }

    /// Fix the time `strftime_now` sees (seconds since 1970, UTC); None: the clock.
    /// Tests fix it so templates that print today's date render the same every day.
    pub fn set_clock(&mut self, fixed: Option<i64>) {
        self.env.add_function("strftime_now", move |fmt: String| {
            let now = fixed.unwrap_or_else(|| {
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
            });
            strftime(&fmt, now)
        });
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prompt text for `messages`, ending with the assistant's header when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        let err = |e: minijinja::Error| ChatError::Template { name: self.name.clone(), detail: describe(&e) };
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        self.env.get_template("chat_template").and_then(|t| t.render(ctx)).map_err(err)
    }

    /// Render a one-message conversation, so a template that cannot work fails at start-up
    /// rather than at the first message.
    pub fn check(&self) -> Result<(), ChatError> {
        self.render(&[Message::new("user", "Hello")], true).map(|_| ())
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// The tokens of a rendered prompt: the vocabulary's BOS if it adds one (dropping a BOS the
/// template printed itself, as llama.cpp does), then the text with special tokens parsed.
pub fn prompt_tokens(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut text = text;
    if tok.add_bos() {
        if let Some(bos) = tok.bos() {
            ids.push(bos);
            if let Some(t) = tok.token_text(bos).filter(|t| !t.is_empty()) {
                text = text.strip_prefix(t).unwrap_or(text);
            }
        }
    }
    ids.extend(tok.encode(text, false, true));
    ids
}

/// Python's `time.strftime` for the directives templates use, in UTC. Unknown directives
/// are kept as written.
pub fn strftime(fmt: &str, unix_secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix_secs.div_euclid(86400);
    let secs = unix_secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(month),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A conversation whose tokens live in a `Session`'s KV cache.
#[derive(Debug, Default)]
pub struct Conversation {
    system: Option<String>,
    messages: Vec<Message>,
    /// The text whose tokens the session holds; empty when the session must start over.
    cached: String,
}

/// What to feed the model for one user turn.
#[derive(Debug)]
pub struct Turn {
    /// Tokens to prefill.
    pub tokens: Vec<u32>,
    /// Whether `tokens` follow what the session holds; if not, reset the session first.
    pub continues: bool,
    text: String,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Conversation {
        Conversation { system, ..Default::default() }
    }

    /// Forget the messages (the system prompt stays); the session must be reset too.
    pub fn reset(&mut self) {
        self.messages.clear();
        self.cached.clear();
    }

    /// Start over with a new system prompt.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
        self.reset();
    }

    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The system prompt (if any) and every message so far.
    pub fn messages(&self) -> Vec<Message> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            all.push(Message::new("system", s));
        }
        all.extend(self.messages.iter().cloned());
        all
    }

    /// Add a user message and work out what to prefill: only the text after what the
    /// session (`session_tokens`) already holds when the rendering allows it.
    pub fn begin_turn(
        &mut self,
        user: &str,
        session_tokens: &[u32],
        template: &ChatTemplate,
        tok: &Tokenizer,
    ) -> Result<Turn, ChatError> {
        self.messages.push(Message::new("user", user));
        let text = match template.render(&self.messages(), true) {
            Ok(t) => t,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        let continues =
            !session_tokens.is_empty() && !self.cached.is_empty() && text.starts_with(&self.cached);
        let tokens = if continues {
            tok.encode(&text[self.cached.len()..], false, true)
        } else {
            prompt_tokens(tok, &text)
        };
        Ok(Turn { tokens, continues, text })
    }

    /// The turn could not run (no room, an error): drop its message; the next turn
    /// prefills the whole conversation.
    pub fn abandon_turn(&mut self) {
        self.messages.pop();
        self.cached.clear();
    }

    /// Record the answer. `answer` is the text shown; `answer_fed` the text of the answer
    /// tokens the session holds (the last token sampled is not fed when generation stops
    /// at a limit, and control tokens appear here but not in `answer`).
    pub fn end_turn(&mut self, turn: Turn, answer: &str, answer_fed: &str) {
        self.cached = turn.text;
        self.cached.push_str(answer_fed);
        self.messages.push(Message::new("assistant", answer));
    }
}

/// Settings of `ferrite chat`.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// Context size in tokens (0: the model's training context).
    pub ctx_size: usize,
    pub sampler: SamplerConfig,
    /// Most tokens per answer (None: until the end of the turn or a full context).
    pub max_tokens: Option<usize>,
    pub system_prompt: Option<String>,
    /// A built-in template name or a Jinja file, instead of the model's.
    pub chat_template: Option<String>,
}

/// Set while an answer is being generated: Ctrl-C then stops the answer instead of ferrite.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

enum Input {
    Terminal(Box<rustyline::DefaultEditor>),
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    /// The next line, None at the end of input (Ctrl-D).
    fn read(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Input::Terminal(ed) => loop {
                match ed.readline("> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = ed.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C at the prompt clears the line, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            },
            Input::Piped(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

const HELP: &str = "\
/reset        start a new conversation (the system prompt stays)
/system TEXT  set the system prompt and start a new conversation (/system alone clears it)
/stats        context use and the last answer's speed
/help         this text
/quit         leave (or Ctrl-D); Ctrl-C stops an answer";

/// `ferrite chat`: read messages (a terminal with line editing, or one message per line of
/// piped input), stream the answers to stdout; notes and statistics go to stderr.
pub fn run_chat(model_path: &Path, opts: ChatOptions) -> anyhow::Result<()> {
    let model = Model::open(model_path)?;
    let tok = Tokenizer::from_gguf(&model.file.gguf)?;
    let template = ChatTemplate::load(opts.chat_template.as_deref(), &model.file.gguf, &tok)?;
    template.check()?;
    let n_ctx = if opts.ctx_size == 0 { model.config.n_ctx_train } else { opts.ctx_size };
    if n_ctx > model.config.n_ctx_train.max(1 << 20) {
        anyhow::bail!("-c {n_ctx}: larger than any context this model can use");
    }
    let mut session = Session::new(&model, n_ctx);
    let mut sampler = Sampler::new(opts.sampler.clone());
    let mut conv = Conversation::new(opts.system_prompt.clone());

    let terminal = std::io::stdin().is_terminal();
    let mut input = if terminal {
        Input::Terminal(Box::new(rustyline::DefaultEditor::new()?))
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })?;
    if terminal {
        eprintln!(
            "ferrite chat: context {n_ctx} tokens, template: {}. /help for commands, Ctrl-C stops an \
             answer, Ctrl-D leaves.",
            template.name()
        );
    }

    let mut last: Option<Stats> = None;
    let stdout = std::io::stdout();
    while let Some(line) = input.read()? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
            match name {
                "reset" => {
                    conv.reset();
                    session.reset();
                    eprintln!("[new conversation]");
                }
                "system" => {
                    let arg = arg.trim();
                    conv.set_system((!arg.is_empty()).then(|| arg.to_string()));
                    session.reset();
                    eprintln!(
                        "[system prompt {}; new conversation]",
                        if arg.is_empty() { "cleared" } else { "set" }
                    );
                }
                "stats" => eprintln!("{}", stats_line(&session, last.as_ref())),
                "help" => eprintln!("{HELP}"),
                "quit" | "exit" => break,
                _ => eprintln!("[unknown command /{name}: /help lists them]"),
            }
            continue;
        }

        let turn = match conv.begin_turn(line, &session.tokens, &template, &tok) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        if !turn.continues {
            session.reset();
        }
        let free = n_ctx - session.tokens.len();
        if turn.tokens.len() >= free {
            eprintln!(
                "[context full: this message needs {} tokens, {} of {n_ctx} are free; /reset starts a \
                 new conversation]",
                turn.tokens.len(),
                free
            );
            conv.abandon_turn();
            continue;
        }
        let start = session.tokens.len() + turn.tokens.len();
        let mut out = stdout.lock();
        let mut decoder = StreamDecoder::new(false);
        let mut answer = String::new();
        let mut write_err = None;
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = session.generate(
            &turn.tokens,
            opts.max_tokens,
            &mut sampler,
            &|t| tok.is_eog(t),
            false,
            &mut |t| {
                if CANCEL.load(Ordering::SeqCst) {
                    return false;
                }
                let piece = decoder.push(&tok, t);
                answer.push_str(&piece);
                match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                    Ok(()) => true,
                    Err(e) => {
                        write_err = Some(e);
                        false
                    }
                }
            },
        );
        GENERATING.store(false, Ordering::SeqCst);
        if let Some(e) = write_err {
            return Err(e.into()); // stdout is gone (`ferrite chat | head`)
        }
        let (stop, stats) = match result {
            Ok(r) => r,
            Err(e) => {
                drop(out);
                eprintln!("\nerror: {e}");
                conv.abandon_turn();
                session.reset();
                continue;
            }
        };
        let rest = decoder.finish();
        answer.push_str(&rest);
        writeln!(out, "{rest}")?;
        out.flush()?;
        drop(out);
        match stop {
            Stop::Cancelled => eprintln!("[stopped]"),
            Stop::ContextFull => {
                eprintln!("[context full: {n_ctx} tokens used; /reset starts a new conversation]")
            }
            Stop::EndOfGeneration | Stop::Length => {}
        }
        let fed: Vec<u8> = session.tokens[start.min(session.tokens.len())..]
            .iter()
            .flat_map(|&t| tok.token_bytes(t))
            .copied()
            .collect();
        conv.end_turn(turn, &answer, &String::from_utf8_lossy(&fed));
        last = Some(stats);
    }
    Ok(())
}

fn stats_line(session: &Session, last: Option<&Stats>) -> String {
    let mut s = format!("[stats] context {}/{} tokens", session.tokens.len(), session.n_ctx());
    if let Some(st) = last {
        s.push_str(&format!(
            "; last turn: prompt {} tokens in {:.1} ms ({:.1} tokens/s), {} tokens generated in {:.1} ms \
             ({:.1} tokens/s)",
            st.prompt_tokens,
            st.prompt_time.as_secs_f64() * 1e3,
            st.prompt_tps(),
            st.generated_tokens,
            st.decode_time.as_secs_f64() * 1e3,
            st.decode_tps()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_python_directives() {
        // 2024-09-26 13:05:09 UTC, a Thursday.
        let t = 1_727_355_909;
        assert_eq!(strftime("%d %b %Y", t), "26 Sep 2024");
        assert_eq!(strftime("%A %B %e %y %H:%M:%S %% %Q", t), "Thursday September 26 24 13:05:09 % %Q");
        assert_eq!(strftime("%Y-%m-%d %a", 0), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
        assert_eq!(strftime("%Y-%m-%d", -86_400), "1969-12-31");
    }

    #[test]
    fn builtin_templates_compile() {
        for (name, src) in BUILTIN_TEMPLATES {
            let t = ChatTemplate::new(name, src, "<s>", "</s>").unwrap();
            t.check().unwrap();
        }
    }

    #[test]
    fn endless_templates_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "t",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t.render(&[], true), Err(ChatError::Template { .. })));
    }
}
