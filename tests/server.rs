//! `ferrite serve` on a free loopback port with SmolLM2, driven over real HTTP by a small
//! hand-written client (so malformed requests can be sent too).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite::chat::{ChatTemplate, Message};
use ferrite::gguf::GgufFile;
use ferrite::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// A running `ferrite serve`, stopped on drop. Its log (stderr) is collected.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = common::ferrite()
            .arg("serve")
            .arg("-m")
            .arg(common::smollm2())
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        let log = Arc::new(Mutex::new(Vec::new()));
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(addr) = line.split("listening on http://").nth(1) {
                port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok());
                break;
            }
        }
        let Some(port) = port else {
            let _ = child.kill();
            panic!("ferrite serve did not start: {:?}", log.lock().unwrap());
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, port, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait (up to a minute) for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(text)) {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no log line with {text:?}: {:?}", self.log());
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    /// Send raw bytes, read the whole response.
    fn raw(&self, request: &[u8]) -> Response {
        let mut s = self.connect();
        // The server may answer (and close) before taking all of an oversized body.
        let _ = s.write_all(request);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Response::parse(&buf)
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.raw(&req)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(buf: &[u8]) -> Response {
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = buf[split + 4..].to_vec();
        if headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked") {
            body = dechunk(&body);
        } else if let Some((_, n)) = headers.iter().find(|(n, _)| n == "content-length") {
            assert_eq!(body.len(), n.parse::<usize>().unwrap(), "body length");
        }
        Response { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `data:` payloads of a server-sent event stream.
    fn events(&self) -> Vec<String> {
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        let text = String::from_utf8(self.body.clone()).unwrap();
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        assert_eq!(&b[eol + 2 + n..eol + 4 + n], b"\r\n");
        b = &b[eol + 4 + n..];
    }
}

fn chat_body(question: &str, max_tokens: u64) -> Value {
    json!({"model": "any", "messages": [{"role": "user", "content": question}],
           "temperature": 0, "max_tokens": max_tokens})
}

/// `ferrite run` on the same prompt, greedy.
fn ferrite_run(prompt: &str, n: u64) -> String {
    let out = common::ferrite()
        .arg("run")
        .arg("-m")
        .arg(common::smollm2())
        .args(["-c", "1024", "--temp", "0", "-n", &n.to_string(), "-p", prompt])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

fn templated(messages: &[Message]) -> String {
    let f = GgufFile::open(common::smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&f.gguf).unwrap();
    ChatTemplate::load(None, &f.gguf, &tok).unwrap().render(messages, true).unwrap()
}

#[test]
fn chat_answers_plain_and_streamed_equal_ferrite_run() {
    let s = Server::start(&["-c", "1024"]);
    let question = "What is 2+2?";
    let r = s.post("/v1/chat/completions", &chat_body(question, 24));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!answer.is_empty());
    let prompt = templated(&[Message::new("user", question)]);
    assert_eq!(answer, ferrite_run(&prompt, 24), "the server and `ferrite run` differ");
    let usage = &v["usage"];
    let f = GgufFile::open(common::smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&f.gguf).unwrap();
    assert_eq!(usage["prompt_tokens"], tok.encode(&prompt, true, true).len());
    let generated = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + generated);
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap().to_string();
    assert_eq!(finish, if generated == 24 { "length" } else { "stop" });

    // Streamed: the same text in pieces, then the finish reason, the usage and [DONE].
    let mut body = chat_body(question, 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(text, answer);
    assert!(chunks.len() > 4, "the answer comes in pieces");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], finish.as_str());
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"], *usage);

    // Text completions: the raw prompt, as `ferrite run` takes it.
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), ferrite_run("The capital of France is", 12));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);

    // A stop string cuts the text before it, also when streamed.
    let stop =
        json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "stop": ["\n"]});
    let v = s.post("/v1/completions", &stop).json();
    let full = ferrite_run("The capital of France is", 12);
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), full.split('\n').next().unwrap());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let mut streamed = stop.clone();
    streamed["stream"] = json!(true);
    let events = s.post("/v1/completions", &streamed).events();
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, full.split('\n').next().unwrap());
}

#[test]
fn models_health_and_seeded_sampling() {
    let s = Server::start(&["-c", "256"]);
    let r = s.request("GET", "/health", b"");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let v = s.request("GET", "/v1/models", b"").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(v["data"][0]["object"], "model");

    // The same seed gives the same sample.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 7});
    let a = s.post("/v1/completions", &body).json()["choices"][0]["text"].clone();
    let b = s.post("/v1/completions", &body).json()["choices"][0]["text"].clone();
    assert_eq!(a, b);
}

#[test]
fn four_concurrent_clients_are_all_answered() {
    let s = Server::start(&["-c", "512"]);
    let questions = ["What is 2+2?", "Name a color.", "Say hello.", "What is the sun?"];
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let s = &s;
                scope.spawn(move || {
                    let r = s.post("/v1/chat/completions", &chat_body(q, 8));
                    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
                    r.json()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (q, a) in questions.iter().zip(&answers) {
        let n = a["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(n > 0 && n <= 8, "{q}: {a}");
        assert!(!a["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{q}: {a}");
    }
    // Served one after another from a fresh cache: the answer does not depend on the others.
    let again = s.post("/v1/chat/completions", &chat_body(questions[0], 8)).json();
    assert_eq!(again["choices"][0]["message"], answers[0]["choices"][0]["message"]);
}

#[test]
fn bad_requests_get_4xx_while_a_good_one_is_served() {
    let s = Server::start(&["-c", "256", "--max-body", "65536"]);
    let good = std::thread::scope(|scope| {
        let good = scope.spawn(|| {
            let mut body = chat_body("Tell me a story.", 32);
            body["stream"] = json!(true);
            s.post("/v1/chat/completions", &body)
        });

        let user = |extra: Value| {
            let mut b = json!({"messages": [{"role": "user", "content": "Hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b.to_string().into_bytes()
        };
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("invalid JSON", b"{\"messages\": [".to_vec(), 400),
            ("not an object", b"[1, 2]".to_vec(), 400),
            ("messages not a list", br#"{"messages": "Hi"}"#.to_vec(), 400),
            ("no messages", br#"{"messages": []}"#.to_vec(), 400),
            ("content of the wrong type", br#"{"messages": [{"role": "user", "content": 5}]}"#.to_vec(), 400),
            ("temperature a string", user(json!({"temperature": "hot"})), 400),
            ("stream a string", user(json!({"stream": "yes"})), 400),
            ("negative max_tokens", user(json!({"max_tokens": -1})), 400),
            ("huge max_tokens", user(json!({"max_tokens": 1_000_000_000_000u64})), 400),
            ("fractional max_tokens", user(json!({"max_tokens": 2.5})), 400),
            ("too many stop strings", user(json!({"stop": ["a", "b", "c", "d", "e"]})), 400),
            (
                "prompt beyond the context",
                user(json!({"messages": [{"role": "user", "content": "word ".repeat(400)}]})),
                400,
            ),
            (
                "oversized body",
                user(json!({"messages": [{"role": "user", "content": "x".repeat(100_000)}]})),
                413,
            ),
            ("invalid UTF-8", b"{\"messages\": \"\xff\xfe\"}".to_vec(), 400),
        ];
        for (what, body, want) in cases {
            let r = s.request("POST", "/v1/chat/completions", &body);
            assert_eq!(r.status, want, "{what}: {:?}", String::from_utf8_lossy(&r.body));
            let e = r.json();
            assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {e}");
            assert!(e["error"]["type"].is_string(), "{what}: {e}");
        }
        let r = s.request("POST", "/v1/chat/completions", &user(json!({"max_tokens": -1})));
        assert_eq!(r.json()["error"]["param"], "max_tokens");
        let r = s.request(
            "POST",
            "/v1/completions",
            &user(json!({"messages": [{"role": "user", "content": "word ".repeat(400)}]})),
        );
        assert_eq!((r.status, r.json()["error"]["param"].clone()), (400, json!("prompt")));
        let r = s.post("/v1/completions", &json!({"prompt": "word ".repeat(400)}));
        assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!("context_length_exceeded")));

        // Not the API: wrong paths and methods, and broken HTTP.
        assert_eq!(s.request("GET", "/v1/nothing", b"").status, 404);
        assert_eq!(s.request("GET", "/v1/chat/completions", b"").status, 405);
        assert_eq!(s.request("DELETE", "/health", b"").status, 405);
        assert_eq!(s.raw(b"hello\r\n\r\n").status, 400);
        assert_eq!(s.raw(b"GET / HTTP/9.9\r\n\r\n").status, 505);
        assert_eq!(s.raw(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 12x\r\n\r\n").status, 400);
        assert_eq!(
            s.raw(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n").status,
            413
        );
        let chunked =
            b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(s.raw(chunked).status, 411);
        let huge_header = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(s.raw(huge_header.as_bytes()).status, 431);
        // A client that sends half a request and leaves.
        drop(s.connect().write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro"));

        good.join().unwrap()
    });
    assert_eq!(good.status, 200);
    let events = good.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(events.len() > 3);
    assert_eq!(s.request("GET", "/health", b"").status, 200);
}

#[test]
fn a_client_leaving_mid_stream_frees_the_model() {
    let s = Server::start(&["-c", "1024"]);
    let body =
        json!({"prompt": "The capital of France is", "max_tokens": 1000, "temperature": 0, "stream": true});
    let mut conn = s.connect();
    let body = body.to_string();
    write!(conn, "POST /v1/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    // Read until a few pieces of text have come, then hang up.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(6).filter(|w| w == b"data: ").count() < 4 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    drop(conn);

    // The server notices at its next write and stops generating.
    let line = s.wait_for_log("client left after");
    let n: usize =
        line.split("client left after ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(n < 200, "generation went on for {n} tokens after the client left: {line}");
    assert_eq!(s.request("GET", "/health", b"").status, 200);
    let r = s.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 2}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["completion_tokens"], 2);
}

#[test]
fn official_openai_python_client() {
    let s = Server::start(&["-c", "1024"]);
    let out = Command::new("python3")
        .arg(common::root().join("tests/py/openai_client.py"))
        .arg(format!("http://127.0.0.1:{}/v1", s.port))
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "tests/py/openai_client.py failed (scripts/test.sh installs the `openai` package): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let prompt = templated(&[Message::new("user", "What is 2+2?")]);
    assert_eq!(v["chat"].as_str().unwrap(), ferrite_run(&prompt, 16));
    assert_eq!(v["streamed"], v["chat"]);
    assert_eq!(v["completion"].as_str().unwrap(), ferrite_run("The capital of France is", 6));
    assert_eq!(v["models"], json!(["SmolLM2-135M-Instruct.Q4_1"]));
    assert_eq!(v["bad_request_status"], 400);
}
