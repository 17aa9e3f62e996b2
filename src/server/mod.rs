//! `ferrite serve`: an OpenAI-compatible HTTP API over one model.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (streamed as server-sent
//! events or not), `GET /v1/models`, `GET /health`. Each connection gets a thread; requests
//! for generation queue on the one session (a mutex) and are served in turn, each from an
//! empty KV cache, so an answer depends only on its request (and its seed). A streamed answer
//! stops as soon as a write to its client fails, and a non-streamed one when the client's
//! socket is seen closed, so a client that leaves frees the model at once. Every bad request
//! is answered with a 4xx and an OpenAI-style error object.

pub mod http;

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::chat::{self, ChatError, ChatTemplate, Message};
use crate::generate::{Session, Stop};
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Settings of `ferrite serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    /// 0: any free port (the one chosen is printed).
    pub port: u16,
    /// Context size in tokens (0: the model's training context).
    pub ctx_size: usize,
    /// Sampling defaults for requests that leave a setting out (its seed is not used).
    pub sampler: SamplerConfig,
    /// Seed of requests that give none (None: a new one from the clock each time).
    pub seed: Option<u64>,
    /// A built-in template name or a Jinja file, instead of the model's.
    pub chat_template: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
}

/// Connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 64;
/// A client that sends nothing (or reads nothing) for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Most stop strings a request may give (as OpenAI).
const MAX_STOP: usize = 4;

/// An error answer: status, OpenAI error type, offending parameter, message.
#[derive(Debug)]
struct ApiError {
    status: u16,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn invalid(param: Option<&'static str>, message: impl Into<String>) -> ApiError {
        ApiError { status: 400, kind: "invalid_request_error", param, code: None, message: message.into() }
    }
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, param: None, code: None, message: message.into() }
    }
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// One completion request, checked.
struct Params {
    prompt: Prompt,
    max_tokens: Option<usize>,
    sampler: SamplerConfig,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

struct Server<'m> {
    model_name: String,
    tok: Tokenizer,
    /// None: the model has no template, and chat requests are refused.
    template: Option<ChatTemplate>,
    defaults: SamplerConfig,
    seed: Option<u64>,
    max_body: usize,
    n_ctx: usize,
    session: Mutex<Session<'m>>,
    connections: AtomicUsize,
    requests: AtomicU64,
}

/// Load the model and serve until the process is stopped.
pub fn serve(model_path: &Path, opts: ServeOptions) -> anyhow::Result<()> {
    let model = Model::open(model_path)?;
    let tok = Tokenizer::from_gguf(&model.file.gguf)?;
    let template = match ChatTemplate::load(opts.chat_template.as_deref(), &model.file.gguf, &tok) {
        Ok(t) => {
            t.check()?;
            Some(t)
        }
        Err(ChatError::NoTemplate) => {
            eprintln!("warning: {}; /v1/chat/completions is off", ChatError::NoTemplate);
            None
        }
        Err(e) => return Err(e.into()),
    };
    let n_ctx = if opts.ctx_size == 0 { model.config.n_ctx_train } else { opts.ctx_size };
    if n_ctx > model.config.n_ctx_train.max(1 << 20) {
        anyhow::bail!("-c {n_ctx}: larger than any context this model can use");
    }
    let listener = TcpListener::bind((opts.host.as_str(), opts.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
    let model_name = model_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let server = Server {
        model_name,
        tok,
        template,
        defaults: opts.sampler,
        seed: opts.seed,
        max_body: opts.max_body,
        n_ctx,
        session: Mutex::new(Session::new(&model, n_ctx)),
        connections: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
    };
    eprintln!(
        "ferrite serve: {} (context {n_ctx} tokens, kernels {}) listening on http://{}",
        server.model_name,
        model.kernels.level.name(),
        listener.local_addr()?
    );
    std::thread::scope(|s| {
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to free up.
                    eprintln!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let server = &server;
            if server.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                server.connections.fetch_sub(1, Ordering::SeqCst);
                let err = ApiError::new(503, "server_error", "too many connections; try again later");
                let mut w = &stream;
                let _ = http::respond(&mut w, 503, "application/json", err.body().to_string().as_bytes());
                continue;
            }
            let spawned =
                std::thread::Builder::new().name("ferrite-http".into()).spawn_scoped(s, move || {
                    // A bug must not take the server down: its panic is printed, the rest go on.
                    let serve = std::panic::AssertUnwindSafe(|| server.connection(stream));
                    let _ = std::panic::catch_unwind(serve);
                    server.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                server.connections.fetch_sub(1, Ordering::SeqCst);
                eprintln!("cannot start a thread: {e}");
            }
        }
    });
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Whether the peer has closed the connection (checked without blocking).
fn client_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let gone = match stream.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    gone || stream.set_nonblocking(false).is_err()
}

/// How a request ended, for the log line.
struct Outcome {
    status: u16,
    note: String,
}

impl Outcome {
    fn new(status: u16, note: impl Into<String>) -> Outcome {
        Outcome { status, note: note.into() }
    }
}

impl Server<'_> {
    fn connection(&self, stream: TcpStream) {
        let t0 = Instant::now();
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let Ok(read_half) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read_half);
        let mut w = BufWriter::new(&stream);
        let req = match http::read_request(&mut reader, &mut w, self.max_body) {
            Ok(r) => r,
            Err(http::ReadError::Closed) => return,
            Err(http::ReadError::Bad { status, message, drain }) => {
                http::drain(&mut reader, drain);
                let kind = if status == 413 { "request_too_large" } else { "invalid_request_error" };
                let err = ApiError::new(status, kind, message);
                let _ = http::respond(&mut w, status, "application/json", err.body().to_string().as_bytes());
                eprintln!("- -> {status} {}", err.message);
                // Input left unread at close makes the kernel reset the connection, which
                // can destroy the answer before the client reads it: close gently.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                http::drain(&mut reader, 1 << 20);
                return;
            }
        };
        let out = self.route(&req, &mut w, &stream);
        eprintln!(
            "{} {} -> {} {}({:.0} ms)",
            req.method,
            req.path,
            out.status,
            if out.note.is_empty() { String::new() } else { format!("{} ", out.note) },
            t0.elapsed().as_secs_f64() * 1e3
        );
    }

    fn route(&self, req: &http::Request, w: &mut impl Write, stream: &TcpStream) -> Outcome {
        let result = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") => Ok(self.send_json(w, json!({"status": "ok"}))),
            ("GET", "/v1/models") => Ok(self.send_json(
                w,
                json!({"object": "list", "data": [{
                    "id": self.model_name, "object": "model", "created": now_secs(), "owned_by": "ferrite"
                }]}),
            )),
            ("POST", "/v1/chat/completions") => self.completion(true, &req.body, w, stream),
            ("POST", "/v1/completions") => self.completion(false, &req.body, w, stream),
            (_, "/health" | "/v1/models" | "/v1/chat/completions" | "/v1/completions") => Err(ApiError::new(
                405,
                "invalid_request_error",
                format!("{} is not allowed here", req.method),
            )),
            (_, path) => {
                Err(ApiError::new(404, "invalid_request_error", format!("no such endpoint: {path}")))
            }
        };
        result.unwrap_or_else(|e| {
            let _ = http::respond(w, e.status, "application/json", e.body().to_string().as_bytes());
            Outcome::new(e.status, e.message)
        })
    }

    fn send_json(&self, w: &mut impl Write, v: Value) -> Outcome {
        let _ = http::respond(w, 200, "application/json", v.to_string().as_bytes());
        Outcome::new(200, "")
    }

    /// A chat (`chat`) or text completion.
    fn completion(
        &self,
        chat: bool,
        body: &[u8],
        w: &mut impl Write,
        stream: &TcpStream,
    ) -> Result<Outcome, ApiError> {
        let p = parse_params(body, chat, &self.defaults, self.seed, self.n_ctx)?;
        let tokens = match &p.prompt {
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    ApiError::invalid(
                        Some("messages"),
                        "this model has no chat template: restart ferrite serve with --chat-template",
                    )
                })?;
                let text = template
                    .render(messages, true)
                    .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
                chat::prompt_tokens(&self.tok, &text)
            }
            Prompt::Text(text) => self.tok.encode(text, true, true),
        };
        if tokens.is_empty() {
            return Err(ApiError::invalid(Some("prompt"), "the prompt is empty"));
        }
        if tokens.len() >= self.n_ctx {
            let mut e = ApiError::invalid(
                Some(if chat { "messages" } else { "prompt" }),
                format!(
                    "the prompt is {} tokens, which leaves no room in the context of {} tokens",
                    tokens.len(),
                    self.n_ctx
                ),
            );
            e.code = Some("context_length_exceeded");
            return Err(e);
        }

        // Queue for the model; a client that left meanwhile is not served.
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        if client_gone(stream) {
            return Ok(Outcome::new(499, "client left while queued"));
        }
        session.reset();
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{:x}{n:04x}", if chat { "chatcmpl" } else { "cmpl" }, now_secs());
        let mut out = Reply {
            chat,
            stream: p.stream,
            id,
            created: now_secs(),
            model: &self.model_name,
            text: String::new(),
            w,
            write_failed: false,
        };
        if p.stream {
            out.start();
        }
        let mut sampler = Sampler::new(p.sampler);
        let mut decoder = StreamDecoder::new(false);
        let mut stopper = StopStrings::new(p.stop);
        let mut hit_stop = false;
        let mut tokens_seen = 0usize;
        let result =
            session.generate(&tokens, p.max_tokens, &mut sampler, &|t| self.tok.is_eog(t), false, &mut |t| {
                tokens_seen += 1;
                let (text, hit) = stopper.push(&decoder.push(&self.tok, t));
                out.send(&text);
                hit_stop = hit;
                let gone =
                    out.write_failed || (!p.stream && tokens_seen.is_multiple_of(8) && client_gone(stream));
                !hit && !gone
            });
        let (stop, stats) = match result {
            Ok(r) => r,
            Err(e) => {
                let e = ApiError::new(500, "server_error", format!("generation failed: {e}"));
                if p.stream {
                    out.event(&e.body());
                    out.finish();
                    return Ok(Outcome::new(500, e.message));
                }
                return Err(e);
            }
        };
        drop(session);
        if out.write_failed || (stop == Stop::Cancelled && !hit_stop) {
            return Ok(Outcome::new(499, format!("client left after {} tokens", stats.generated_tokens)));
        }
        if !hit_stop {
            let (text, hit) = stopper.push(&decoder.finish());
            out.send(&text);
            if !hit {
                out.send(&stopper.finish());
            }
        }
        let finish_reason = match stop {
            Stop::Length | Stop::ContextFull if !hit_stop => "length",
            _ => "stop",
        };
        let usage = json!({
            "prompt_tokens": tokens.len(),
            "completion_tokens": stats.generated_tokens,
            "total_tokens": tokens.len() + stats.generated_tokens,
        });
        let note = format!(
            "prompt {} tokens, {} generated, {:.1} tokens/s",
            tokens.len(),
            stats.generated_tokens,
            stats.decode_tps()
        );
        if p.stream {
            out.event(&out.chunk(json!({}), "", Some(finish_reason)));
            if p.include_usage {
                let mut last = out.chunk(json!({}), "", None);
                last["choices"] = json!([]);
                last["usage"] = usage;
                out.event(&last);
            }
            out.finish();
        } else {
            let choice = if chat {
                json!({"index": 0, "message": {"role": "assistant", "content": out.text},
                       "logprobs": null, "finish_reason": finish_reason})
            } else {
                json!({"index": 0, "text": out.text, "logprobs": null, "finish_reason": finish_reason})
            };
            let body = json!({
                "id": out.id, "object": if chat { "chat.completion" } else { "text_completion" },
                "created": out.created, "model": self.model_name, "choices": [choice], "usage": usage,
            });
            let _ = http::respond(out.w, 200, "application/json", body.to_string().as_bytes());
        }
        Ok(Outcome::new(200, note))
    }
}

/// The answer being written: collected (plain JSON) or sent as it comes (server-sent events).
struct Reply<'a, W: Write> {
    chat: bool,
    stream: bool,
    id: String,
    created: u64,
    model: &'a str,
    /// The whole text, when not streaming.
    text: String,
    w: &'a mut W,
    write_failed: bool,
}

impl<W: Write> Reply<'_, W> {
    /// A streamed chunk: `delta` for chat, `text` for completions.
    fn chunk(&self, delta: Value, text: &str, finish_reason: Option<&str>) -> Value {
        let choice = if self.chat {
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason})
        };
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn event(&mut self, v: &Value) {
        if !self.write_failed {
            let data = format!("data: {v}\n\n");
            self.write_failed = http::write_chunk(self.w, data.as_bytes()).is_err();
        }
    }

    fn start(&mut self) {
        self.write_failed = http::start_chunks(self.w, 200, "text/event-stream").is_err();
        if self.chat {
            self.event(&self.chunk(json!({"role": "assistant", "content": ""}), "", None));
        }
    }

    fn send(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.stream {
            self.event(&self.chunk(json!({"content": text}), text, None));
        } else {
            self.text.push_str(text);
        }
    }

    fn finish(&mut self) {
        if !self.write_failed {
            self.write_failed = http::write_chunk(self.w, b"data: [DONE]\n\n")
                .and_then(|_| http::end_chunks(self.w))
                .is_err();
        }
    }
}

/// Holds back text that may be the start of a stop string, and cuts the text at the first
/// stop string.
struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    fn new(stops: Vec<String>) -> StopStrings {
        StopStrings { stops, pending: String::new() }
    }

    /// Add generated text; returns the text now safe to send and whether a stop string
    /// was found (the text then ends before it).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(at);
            return (std::mem::take(&mut self.pending), true);
        }
        // The longest end of `pending` that begins some stop string stays.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| s.char_indices().map(|(i, _)| i).skip(1).map(move |i| &s[..i]))
            .filter(|prefix| self.pending.ends_with(prefix))
            .map(|prefix| prefix.len())
            .max()
            .unwrap_or(0);
        let rest = self.pending.split_off(self.pending.len() - keep);
        (std::mem::replace(&mut self.pending, rest), false)
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn number(obj: &Map<String, Value>, name: &'static str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x >= lo && x <= hi => Ok(Some(x as f32)),
            _ => Err(ApiError::invalid(
                Some(name),
                format!("'{name}' must be a number from {lo} to {hi}, not {v}"),
            )),
        },
    }
}

fn count(obj: &Map<String, Value>, name: &'static str, max: u64) -> Result<Option<usize>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if x <= max => Ok(Some(x as usize)),
            Some(x) => {
                Err(ApiError::invalid(Some(name), format!("'{name}' is {x}, more than the limit of {max}")))
            }
            None => Err(ApiError::invalid(
                Some(name),
                format!("'{name}' must be a non-negative integer, not {v}"),
            )),
        },
    }
}

fn boolean(obj: &Map<String, Value>, name: &'static str) -> Result<bool, ApiError> {
    match field(obj, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::invalid(Some(name), format!("'{name}' must be true or false, not {v}"))),
    }
}

/// A message's content: a string, or a list of text parts.
fn content(v: Option<&Value>, i: usize) -> Result<String, ApiError> {
    let err = |what: &str| ApiError::invalid(Some("messages"), format!("messages[{i}].content {what}"));
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => return Err(err("must hold only parts of type \"text\" with a \"text\" string")),
                }
            }
            Ok(s)
        }
        Some(_) => Err(err("must be a string or a list of text parts")),
    }
}

fn parse_params(
    body: &[u8],
    chat: bool,
    defaults: &SamplerConfig,
    seed: Option<u64>,
    n_ctx: usize,
) -> Result<Params, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| ApiError::invalid(None, "the body must be a JSON object"))?;

    let prompt = if chat {
        let list = field(obj, "messages")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| ApiError::invalid(Some("messages"), "'messages' must be a non-empty list"))?;
        let mut messages = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).filter(|r| !r.is_empty()).ok_or_else(|| {
                ApiError::invalid(Some("messages"), format!("messages[{i}] needs a 'role' string"))
            })?;
            // OpenAI's newer name for the system role, which templates do not know.
            let role = if role == "developer" { "system" } else { role };
            messages.push(Message { role: role.to_string(), content: content(m.get("content"), i)? });
        }
        Prompt::Chat(messages)
    } else {
        match field(obj, "prompt") {
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "'prompt' must be a string or a list of one string",
                ))
            }
            _ => return Err(ApiError::invalid(Some("prompt"), "'prompt' must be a string")),
        }
    };

    // Answers longer than the context cannot exist: a larger limit is a mistake.
    let max_tokens = match count(obj, "max_completion_tokens", n_ctx as u64)? {
        Some(m) => Some(m),
        None => count(obj, "max_tokens", n_ctx as u64)?,
    };
    if count(obj, "n", u64::MAX)?.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(Some("n"), "only one choice per request ('n': 1) is supported"));
    }
    let mut sampler = defaults.clone();
    if let Some(t) = number(obj, "temperature", 0.0, 2.0)? {
        sampler.temp = t;
    }
    if let Some(p) = number(obj, "top_p", 0.0, 1.0)? {
        sampler.top_p = p;
    }
    if let Some(p) = number(obj, "min_p", 0.0, 1.0)? {
        sampler.min_p = p;
    }
    if let Some(k) = count(obj, "top_k", u32::MAX as u64)? {
        sampler.top_k = k;
    }
    if let Some(r) = number(obj, "repeat_penalty", 0.0, 100.0)? {
        if r == 0.0 {
            return Err(ApiError::invalid(Some("repeat_penalty"), "'repeat_penalty' must be above 0"));
        }
        sampler.repeat_penalty = r;
    }
    // -1 asks for a seed from the clock, as in llama.cpp's server.
    sampler.seed = match field(obj, "seed") {
        None if seed.is_some() => seed.unwrap_or_default(),
        None => crate::sampler::clock_seed(),
        Some(v) if v.as_i64() == Some(-1) => crate::sampler::clock_seed(),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|i| i as u64))
            .ok_or_else(|| ApiError::invalid(Some("seed"), format!("'seed' must be an integer, not {v}")))?,
    };
    let stop = match field(obj, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= MAX_STOP && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stop"),
                format!("'stop' must be a string or a list of at most {MAX_STOP} strings"),
            ))
        }
    };
    let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let stream = boolean(obj, "stream")?;
    let include_usage = match field(obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")?,
        Some(_) => {
            return Err(ApiError::invalid(Some("stream_options"), "'stream_options' must be an object"))
        }
    };
    Ok(Params { prompt, max_tokens, sampler, stop, stream, include_usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_stops(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = s.push(p);
            out.push_str(&t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_cut_and_hold_back() {
        assert_eq!(run_stops(&["\n\n"], &["a", "b\n", "\nc"]), ("ab".into(), true));
        assert_eq!(run_stops(&["END"], &["xE", "N", "y"]), ("xENy".into(), false));
        assert_eq!(run_stops(&["END", "x"], &["abEN", "Dx"]), ("ab".into(), true));
        assert_eq!(run_stops(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
        assert_eq!(run_stops(&[], &["a", "b"]), ("ab".into(), false));
        let mut s = StopStrings::new(vec!["END".into()]);
        assert_eq!(s.push("abcE"), ("abc".into(), false));
        assert_eq!(s.finish(), "E");
    }

    fn parse(body: &str) -> Result<Params, ApiError> {
        parse_params(body.as_bytes(), true, &SamplerConfig::default(), None, 100)
    }

    #[test]
    fn request_checks() {
        let ok = parse(
            r#"{"messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"user","content":"hi"}],"max_tokens":5,"temperature":0,"seed":-2,"stop":"x",
                "stream":true,"stream_options":{"include_usage":true},"frequency_penalty":0}"#,
        )
        .unwrap();
        let Prompt::Chat(m) = &ok.prompt else { panic!() };
        assert_eq!(m[0], Message::new("system", "ab"));
        // Negative seeds wrap, but for -1, which asks for one from the clock (as llama.cpp).
        assert_eq!((ok.max_tokens, ok.sampler.temp, ok.sampler.seed), (Some(5), 0.0, u64::MAX - 1));
        assert!(parse(r#"{"messages":[{"role":"user","content":"a"}],"seed":-1}"#).is_ok());
        assert_eq!(ok.stop, vec!["x".to_string()]);
        assert!(ok.stream && ok.include_usage);

        let bad = [
            ("[1]", None),
            ("{", None),
            (r#"{"messages":[]}"#, Some("messages")),
            (r#"{"messages":"hi"}"#, Some("messages")),
            (r#"{"messages":[{"content":"hi"}]}"#, Some("messages")),
            (r#"{"messages":[{"role":"user","content":5}]}"#, Some("messages")),
            (r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#, Some("messages")),
            (r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":-1}"#, Some("max_tokens")),
            (r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":101}"#, Some("max_tokens")),
            (r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":"5"}"#, Some("max_tokens")),
            (r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":1.5}"#, Some("max_tokens")),
            (r#"{"messages":[{"role":"user","content":"a"}],"temperature":-1}"#, Some("temperature")),
            (r#"{"messages":[{"role":"user","content":"a"}],"temperature":"hot"}"#, Some("temperature")),
            (r#"{"messages":[{"role":"user","content":"a"}],"top_p":2}"#, Some("top_p")),
            (r#"{"messages":[{"role":"user","content":"a"}],"seed":1.5}"#, Some("seed")),
            (r#"{"messages":[{"role":"user","content":"a"}],"stop":["a","b","c","d","e"]}"#, Some("stop")),
            (r#"{"messages":[{"role":"user","content":"a"}],"stop":5}"#, Some("stop")),
            (r#"{"messages":[{"role":"user","content":"a"}],"stream":"yes"}"#, Some("stream")),
            (r#"{"messages":[{"role":"user","content":"a"}],"n":2}"#, Some("n")),
        ];
        for (body, param) in bad {
            let e = parse(body).err().unwrap_or_else(|| panic!("{body} was accepted"));
            assert_eq!((e.status, e.param), (400, param), "{body}: {}", e.message);
        }
        let e = parse_params(br#"{"prompt":["a","b"]}"#, false, &SamplerConfig::default(), None, 100)
            .err()
            .unwrap();
        assert_eq!(e.param, Some("prompt"));
    }
}
