//! What the `http_*` tests share: a test actor with every kind of handler, and a runtime
//! served on a loopback port with a real client.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use futures::StreamExt;
use gears::http::{HttpConfig, Server};
use gears::prelude::*;

/// The event of an [`Account`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub amount: i64,
    pub balance: i64,
}

/// Why [`Account::withdraw`] refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountError {
    Insufficient { balance: i64, wanted: i64 },
    Frozen,
}

/// A bank account: mutations, reads, a typed error, events, timers, panics and slowness.
#[derive(Actor, Default, Debug, Serialize, Deserialize)]
#[actor(name = "account", events = Moved)]
pub struct Account {
    pub balance: i64,
    /// Turns that ran `deposit` and committed.
    pub deposits: u64,
    pub frozen: bool,
    pub reminders: Vec<String>,
}

#[handlers]
impl Account {
    /// Adds `amount`, publishes [`Moved`], returns the balance.
    pub async fn deposit(&mut self, ctx: &Context, amount: i64) -> i64 {
        self.balance += amount;
        self.deposits += 1;
        ctx.publish(Moved {
            amount,
            balance: self.balance,
        });
        self.balance
    }

    /// Takes `amount` out, or refuses.
    pub async fn withdraw(&mut self, ctx: &Context, amount: i64) -> Result<i64, AccountError> {
        if self.frozen {
            return Err(AccountError::Frozen);
        }
        if amount > self.balance {
            return Err(AccountError::Insufficient {
                balance: self.balance,
                wanted: amount,
            });
        }
        self.balance -= amount;
        ctx.publish(Moved {
            amount: -amount,
            balance: self.balance,
        });
        Ok(self.balance)
    }

    /// Refuses every later withdrawal.
    pub async fn freeze(&mut self) {
        self.frozen = true;
    }

    /// The balance.
    pub async fn balance(&self) -> i64 {
        self.balance
    }

    /// Publishes `n` events of 1 in one turn.
    pub async fn burst(&mut self, ctx: &Context, n: u32) -> u32 {
        for _ in 0..n {
            self.balance += 1;
            ctx.publish(Moved {
                amount: 1,
                balance: self.balance,
            });
        }
        n
    }

    /// Arms timer `name` to call `remind(name)` after `ms`.
    pub async fn schedule(&mut self, ctx: &Context, name: String, ms: u64) {
        ctx.timer::<Self>(name.clone(), Timer::after(Duration::from_millis(ms)))
            .remind(name);
    }

    /// Called by the timers.
    pub async fn remind(&mut self, name: String) {
        self.reminders.push(name);
    }

    /// Waits until the [`gears_tests::latch::Latch`] named `latch` opens, then answers.
    pub async fn hold(&self, latch: String) -> bool {
        gears_tests::latch::wait(&latch).await;
        true
    }

    /// Sleeps `ms`, then answers.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// Panics.
    pub async fn explode(&self) -> u64 {
        panic!("explode was called")
    }
}

/// A runtime with [`Account`] served on a loopback port, and a client.
pub struct Served {
    pub rt: Runtime,
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Serves a fresh runtime (`builder` adjusts it) with `config` on `127.0.0.1:0`.
pub async fn serve(
    config: HttpConfig,
    builder: impl FnOnce(gears::Builder) -> gears::Builder,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder(Runtime::builder().path(dir.path()).register::<Account>())
        .open()
        .await
        .unwrap();
    let config = config.bind(([127, 0, 0, 1], 0).into());
    let server = gears::http::serve(rt.clone(), config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    Served {
        rt,
        server,
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _dir: dir,
    }
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` (raw) to `path`: status, headers and the body as JSON (`Null` if none).
    pub async fn post(
        &self,
        path: &str,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        decode(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await.unwrap();
        self.rt.shutdown().await.unwrap();
    }
}

pub async fn decode(
    response: reqwest::Response,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(json) => json,
            // Only error bodies must be JSON (metrics are text).
            Err(_) if status < 400 => {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => panic!(
                "status {status}: error body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    };
    (status, headers, json)
}

/// Asserts the JSON error shape and returns the `error` name.
pub fn error_name(body: &serde_json::Value) -> &str {
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error body has a message: {body}"
    );
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body has a name: {body}"))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Reads server-sent events from a response body, skipping comments (keep-alives).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends; panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next_event())
            .await
            .expect("an event within the time limit")
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    data: String::new(),
                };
                let mut fields = false;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = name.trim().to_string();
                        fields = true;
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                        fields = true;
                    }
                }
                if fields {
                    return Some(event);
                }
            }
            match self.body.next().await {
                Some(chunk) => self
                    .buffer
                    .push_str(&String::from_utf8(chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }
}

/// A plain socket to `addr`, for requests a client library would not send (slow, broken,
/// never-ending).
pub async fn connect(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads what the server sends until it closes the connection (EOF or reset) and returns
/// it; panics if the connection is still open after `bound`.
pub async fn until_closed(socket: &mut tokio::net::TcpStream, bound: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + bound;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => panic!(
                "the server kept the connection open for {bound:?}; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
        }
    }
}

/// One response read off a plain socket: status, head (lowercase) and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Parses the first response in `bytes` (a `content-length` body, or none); `None` if
/// `bytes` holds no complete response head.
pub fn parse_response(bytes: &[u8]) -> Option<RawResponse> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let body = bytes.get(end + 4..end + 4 + length)?.to_vec();
    Some(RawResponse { status, head, body })
}

/// Reads one response off `socket` (keeping the connection open), within `bound`.
pub async fn read_response(socket: &mut tokio::net::TcpStream, bound: Duration) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + bound;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(response) = parse_response(&got) {
            return response;
        }
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => panic!(
                "no complete response within {bound:?}: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) => panic!(
                "the connection closed before a complete response: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Err(e)) => panic!("reading the response: {e}"),
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Writes `bytes` to `socket`.
pub async fn write(socket: &mut tokio::net::TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    socket.write_all(bytes).await.unwrap();
}
