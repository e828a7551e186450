//! LLM servers for the reviewer tests, on free loopback ports: a real llama.cpp server
//! (PyPI's xllamacpp serving the local reviewer's SmolLM2 GGUF) and a small scripted one that
//! answers each chat-completions request as its script says (errors, slow answers, malformed
//! output, hang-ups), recording what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::repo;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// xllamacpp's llama.cpp server serving SmolLM2 on loopback; killed when dropped.
pub struct LlamaServer {
    child: Child,
    /// The API base, `http://127.0.0.1:PORT/v1`.
    pub url: String,
}

impl LlamaServer {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("scripts/llm-server.py"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the LLM server starts");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let health = format!("http://127.0.0.1:{port}/health");
        while ureq::get(&health).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "the LLM server never became ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// Kills the server (the backend "goes away").
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the scripted server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a chat completion whose message is this text.
    Answer(String),
    /// This HTTP status with a short error body.
    Status(u16),
    /// Waits this long, then answers like `Answer`.
    Slow(Duration, String),
    /// Closes the connection without answering.
    HangUp,
}

/// A valid verdict answer.
pub fn verdict_json(violation: bool, confidence: f32) -> String {
    let (categories, severity) = if violation {
        (json!(["illegal"]), "high")
    } else {
        (json!([]), "none")
    };
    json!({
        "violation": violation,
        "categories": categories,
        "severity": severity,
        "confidence": confidence,
        "rationale": "A scripted verdict for the test.",
    })
    .to_string()
}

type Script = dyn Fn(usize, &Value) -> Reply + Send + Sync;

/// The scripted server; stops accepting when dropped.
pub struct ScriptedServer {
    /// The API base, `http://127.0.0.1:PORT/v1`.
    pub url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl ScriptedServer {
    /// Answers request number `n` (from 0) with `script(n, body)`.
    pub fn start(script: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, script) = (requests.clone(), script.clone());
                    std::thread::spawn(move || serve(stream, &requests, &*script));
                }
            });
        }
        Self {
            url: format!("http://127.0.0.1:{port}/v1"),
            requests,
            stop,
            port,
        }
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Value>>, script: &Script) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut requests = requests.lock().unwrap();
        requests.push(body.clone());
        requests.len() - 1
    };
    let respond = |mut stream: TcpStream, status: u16, body: String| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    let completion = |text: &str| {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
            .to_string()
    };
    match script(n, &body) {
        Reply::Answer(text) => respond(stream, 200, completion(&text)),
        Reply::Status(code) => respond(stream, code, json!({"error": "scripted"}).to_string()),
        Reply::Slow(pause, text) => {
            std::thread::sleep(pause);
            respond(stream, 200, completion(&text));
        }
        Reply::HangUp => drop(stream),
    }
}
