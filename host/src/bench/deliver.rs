//! The load generator's side of a notification phase: what WeChat's
//! servers do when they call a merchant back, and nothing more.
//!
//! # Why not reqwest, as the intents phase uses
//!
//! The generator shares the machine's two cores with the gateway it
//! measures, so every microsecond it spends on a request is taken from the
//! gateway. reqwest parses the URL, walks its connection pool and its
//! layers, and copies the body on every request. Here each worker keeps one
//! HTTP/1.1 connection of its own, on hyper's connection API, and sends
//! bodies built once (shared, not copied). What goes over the wire is the
//! same: keep-alive `POST`s with a `Content-Length`, each answer read whole.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::error::Error;

/// `POST`s to one URL over one keep-alive connection per worker.
pub(crate) struct Deliverer {
    /// `host:port`, connected to and sent as `Host`.
    authority: String,
    host: HeaderValue,
    path: Uri,
    /// One per worker, each used by its worker alone (the lock is never
    /// contended); `None` until connected, or after the connection failed.
    connections: Vec<Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

/// A whole answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Deliverer {
    /// For `url` (`http://host:port/path`), with `workers` connections.
    pub(crate) fn new(url: &str, workers: usize) -> Result<Arc<Self>, Error> {
        let uri: Uri = url.parse().map_err(|e| Error::input("url", e))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::input("url", "must be plain http://host:port/path"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::input("url", "has no host"))?
            .as_str()
            .to_owned();
        let host = HeaderValue::from_str(&authority).map_err(|e| Error::input("url", e))?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| Error::input("url", e))?;
        Ok(Arc::new(Self {
            authority,
            host,
            path,
            connections: (0..workers.max(1)).map(|_| Mutex::new(None)).collect(),
        }))
    }

    /// Sends `body` on `worker`'s connection and reads the answer whole.
    /// A connection the server closed meanwhile (nothing was sent on it) is
    /// replaced first; a failed exchange drops it, so the worker's next
    /// request opens a new one. Nothing is sent twice.
    pub(crate) async fn post(
        self: Arc<Self>,
        worker: usize,
        body: Bytes,
    ) -> Result<Answer, String> {
        let slot = &self.connections[worker % self.connections.len()];
        let mut connection = slot.lock().await;
        let reusable = match connection.take() {
            Some(open) => Self::still_open(open).await,
            None => None,
        };
        let sender = match reusable {
            Some(open) => open,
            None => self.connect().await?,
        };
        let (sender, answer) = self.exchange(sender, body).await?;
        *connection = Some(sender);
        Ok(answer)
    }

    /// `sender` once it can take a request, or `None` when its connection
    /// has closed (the server may close an idle connection at any time).
    async fn still_open(mut sender: SendRequest<Full<Bytes>>) -> Option<SendRequest<Full<Bytes>>> {
        sender.ready().await.ok().map(|()| sender)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let say = |e: &dyn std::fmt::Display| format!("connect to {}: {e}", self.authority);
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| say(&e))?;
        stream.set_nodelay(true).map_err(|e| say(&e))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| say(&e))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; a
            // failure shows up as the next request's error.
            let _ = connection.await;
        });
        Self::still_open(sender)
            .await
            .ok_or_else(|| say(&"closed at once"))
    }

    /// One request on a connection that is ready for it.
    async fn exchange(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<(SendRequest<Full<Bytes>>, Answer), String> {
        let request = Request::post(self.path.clone())
            .header(HOST, self.host.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((sender, Answer { status, body }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::Deliverer;

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        for bad in ["https://127.0.0.1:1/notify", "/notify/pay", "not a url"] {
            assert!(Deliverer::new(bad, 1).is_err(), "{bad} was taken");
        }
        let ok = Deliverer::new("http://127.0.0.1:8080/notify/pay", 3).unwrap();
        assert_eq!(ok.authority, "127.0.0.1:8080");
        assert_eq!(ok.path, "/notify/pay");
        assert_eq!(ok.connections.len(), 3);
    }

    /// A server that answers each request with what it received (request
    /// line, `Host` and body) and then closes when `close` says so.
    /// Returns its address and how many connections it accepted.
    async fn echo_server(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Some(request) = read_request(&mut stream).await {
                        let connection = if close { "close" } else { "keep-alive" };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                            request.len()
                        );
                        stream.write_all(head.as_bytes()).await.unwrap();
                        stream.write_all(&request).await.unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// One request's request line, `Host` line and body, or `None` at the end.
    async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut seen = Vec::new();
        let head_end = loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8(seen[..head_end].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length");
        let mut body = seen[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "the body was cut short");
            body.extend_from_slice(&chunk[..n]);
        }
        let mut echoed = Vec::new();
        for line in head.lines() {
            if line.starts_with("POST ") || line.to_ascii_lowercase().starts_with("host:") {
                echoed.extend_from_slice(line.as_bytes());
                echoed.push(b'\n');
            }
        }
        echoed.extend_from_slice(&body);
        Some(echoed)
    }

    async fn deliver_three(close: bool) -> usize {
        let (addr, accepted) = echo_server(close).await;
        let deliverer = Deliverer::new(&format!("http://{addr}/notify/pay"), 2).unwrap();
        for (i, worker) in [0, 0, 0].into_iter().enumerate() {
            let body = Bytes::from(format!("<xml><n>{i}</n></xml>"));
            let answer = Arc::clone(&deliverer).post(worker, body).await.unwrap();
            assert!(answer.status.is_success());
            assert_eq!(
                answer.body,
                format!("POST /notify/pay HTTP/1.1\nhost: {addr}\n<xml><n>{i}</n></xml>")
            );
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn each_body_is_posted_whole_and_a_worker_keeps_its_connection() {
        assert_eq!(deliver_three(false).await, 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_before_the_next_request() {
        assert_eq!(deliver_three(true).await, 3);
    }

    #[tokio::test]
    async fn a_server_that_is_gone_is_an_error_naming_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let deliverer = Deliverer::new(&format!("http://{addr}/notify/pay"), 1).unwrap();
        let refused = deliverer.post(0, Bytes::from_static(b"<xml/>")).await;
        let Err(why) = refused else {
            panic!("a post to a closed port succeeded")
        };
        assert!(why.contains(&addr), "{why}");
    }
}
