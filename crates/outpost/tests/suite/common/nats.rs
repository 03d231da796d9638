//! A real NATS server with JetStream for stream tests: Debian's
//! `nats-server`, which `scripts/test` installs, on a free loopback port
//! with its store in a temporary directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

pub struct Nats {
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package; scripts/test installs it)");
        let address = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "nats-server listening", || {
            std::net::TcpStream::connect(&address).ok()
        });
        Nats {
            url: format!("nats://{address}"),
            _dir: dir,
            child,
        }
    }

    /// The messages JetStream holds on `subject`, oldest first, with their
    /// `Nats-Msg-Id` and `Outpost-Seq` headers.
    pub fn messages(&self, stream: &str, subject: &str) -> Vec<(String, String)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use futures_util::StreamExt as _;
            let client = async_nats::connect(&self.url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream(stream).await.unwrap();
            let held = stream.info().await.unwrap().state.messages;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    filter_subject: subject.to_string(),
                    // Unacknowledged messages would stop at max_ack_pending.
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut out = Vec::new();
            let mut messages = consumer
                .fetch()
                .max_messages(held as usize + 1)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .unwrap();
            while let Some(Ok(message)) = messages.next().await {
                let headers = message.headers.clone().unwrap_or_default();
                let seq = headers
                    .get("Outpost-Seq")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push((seq, String::from_utf8_lossy(&message.payload).into_owned()));
            }
            out
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
