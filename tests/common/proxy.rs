//! A TCP proxy a test controls, for network faults between processes on
//! one machine: each link (one node to another, a client to a node) goes
//! through its own proxy (`STRATA_TEST_ROUTES` sends a process's
//! connections there), which passes bytes, holds them in one direction or
//! both (a partition: nothing arrives, nothing is lost, as TCP retransmits
//! until the path heals), delays them, or resets every connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the side that connected (a request).
    Forward,
    /// From the side connected to (an answer).
    Back,
}

#[derive(Default)]
struct State {
    held_forward: AtomicBool,
    held_back: AtomicBool,
    refuse: AtomicBool,
    delay_us: AtomicU64,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

impl State {
    fn held(&self, d: Dir) -> bool {
        match d {
            Dir::Forward => self.held_forward.load(Ordering::SeqCst),
            Dir::Back => self.held_back.load(Ordering::SeqCst),
        }
    }
}

/// A proxy listening on `addr`, passing connections on to its target.
pub struct Proxy {
    pub addr: String,
    state: Arc<State>,
}

impl Proxy {
    /// Starts passing connections to `target` (which need not listen yet).
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        let (st, target) = (state.clone(), target.to_string());
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(from) = incoming else { continue };
                if st.refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(to) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = (from.set_nodelay(true), to.set_nodelay(true));
                {
                    let mut conns = st.conns.lock().unwrap();
                    conns.push(from.try_clone().unwrap());
                    conns.push(to.try_clone().unwrap());
                }
                pump(
                    st.clone(),
                    from.try_clone().unwrap(),
                    to.try_clone().unwrap(),
                    Dir::Forward,
                );
                pump(st.clone(), to, from, Dir::Back);
            }
        });
        Proxy { addr, state }
    }

    /// Holds the bytes going in direction `d` (until `heal`).
    pub fn hold(&self, d: Dir) {
        match d {
            Dir::Forward => self.state.held_forward.store(true, Ordering::SeqCst),
            Dir::Back => self.state.held_back.store(true, Ordering::SeqCst),
        }
    }

    /// Holds both directions: the two sides are partitioned.
    pub fn cut(&self) {
        self.hold(Dir::Forward);
        self.hold(Dir::Back);
    }

    /// Delays every piece of data by `d`, both ways.
    pub fn delay(&self, d: Duration) {
        self.state
            .delay_us
            .store(d.as_micros() as u64, Ordering::SeqCst);
    }

    /// Resets every open connection and refuses new ones (until `heal`).
    pub fn reset(&self) {
        self.state.refuse.store(true, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Passes everything again, at once.
    pub fn heal(&self) {
        self.state.held_forward.store(false, Ordering::SeqCst);
        self.state.held_back.store(false, Ordering::SeqCst);
        self.state.refuse.store(false, Ordering::SeqCst);
        self.state.delay_us.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.reset();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copies `from` to `to` in a thread, honouring holds and delays of `d`.
fn pump(st: Arc<State>, mut from: TcpStream, mut to: TcpStream, d: Dir) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // A held direction is not read: the bytes wait in the kernel's
            // buffers and the sender's, as on a path that drops packets.
            while st.held(d) && !st.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = st.delay_us.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            // Bytes read while a hold began are kept back until it ends.
            while st.held(d) && !st.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
