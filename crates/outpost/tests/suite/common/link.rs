//! A site's uplink that a test can cut: a TCP relay on a free loopback
//! port in front of the control plane's agent port. Cut, it closes every
//! relayed connection and refuses new ones, as a link that went down does
//! to an agent; healed, it relays again. Real sockets end to end (the TLS
//! inside passes through untouched).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Link {
    /// `https://127.0.0.1:PORT`, for an agent's `--server`.
    pub url: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    let mut buffer = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Link {
    /// A relay to `target` (`https://HOST:PORT`).
    pub fn to(target: &str) -> Link {
        let target = target.trim_start_matches("https://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (relay_cut, relay_open) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for agent in listener.incoming().map_while(Result::ok) {
                if relay_cut.load(Ordering::SeqCst) {
                    let _ = agent.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(control) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut open = relay_open.lock().unwrap();
                open.push(agent.try_clone().unwrap());
                open.push(control.try_clone().unwrap());
                let (a, c) = (agent.try_clone().unwrap(), control.try_clone().unwrap());
                let cut = relay_cut.clone();
                std::thread::spawn(move || pump(a, c, cut));
                let cut = relay_cut.clone();
                std::thread::spawn(move || pump(control, agent, cut));
            }
        });
        Link { url, cut, open }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
