//! Test support for the MQTT bridge: a real Mosquitto broker on a free port with persistence
//! in a temporary directory, and its command-line clients (`mosquitto_pub`, `mosquitto_sub`),
//! which no one here wrote. Fails loudly when they are missing (tests/run.sh installs them).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where Debian installs the broker, which may be outside PATH.
const MOSQUITTO_PATHS: [&str; 3] = [
    "mosquitto",
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
];

fn mosquitto_bin() -> String {
    for p in MOSQUITTO_PATHS {
        if Command::new(p)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return p.to_owned();
        }
    }
    panic!("mosquitto not found: install mosquitto and mosquitto-clients (tests/run.sh does)");
}

fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} not found: install mosquitto-clients (tests/run.sh does)"
    );
}

/// The user running the tests: Mosquitto started as root otherwise drops to the `mosquitto`
/// user, which cannot read the test's private temporary directories (ignored when not root).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker with persistence, restartable on the same port.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Extra mosquitto.conf lines for the listener (TLS).
    extra: String,
    starts: usize,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with("")
    }

    pub fn start_with(extra: &str) -> Self {
        require("mosquitto_pub");
        require("mosquitto_sub");
        let mut b = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            extra: extra.to_owned(),
            starts: 0,
        };
        b.spawn();
        b
    }

    pub fn log(&self) -> String {
        (0..self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("broker-{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            &conf,
            format!(
                "user {}\nlistener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 10000\n{}\n",
                current_user(),
                self.port,
                data.display(),
                self.extra
            ),
        )
        .unwrap();
        let log =
            std::fs::File::create(self.dir.path().join(format!("broker-{}.log", self.starts)))
                .unwrap();
        self.starts += 1;
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (the broker saves its persistent sessions) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }

    /// Arguments naming this broker for mosquitto_pub / mosquitto_sub.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    /// Publishes with QoS 1 through mosquitto_pub; panics if it fails.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.publish_with(topic, payload, &[]);
    }

    pub fn publish_with(&self, topic: &str, payload: &[u8], extra: &[&str]) {
        let path: PathBuf = self.dir.path().join("payload");
        std::fs::write(&path, payload).unwrap();
        let out = Command::new("mosquitto_pub")
            .args(self.args())
            .args(["-q", "1", "-t", topic, "-f"])
            .arg(&path)
            .args(extra)
            .output()
            .expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A mosquitto_sub with a persistent session (`-c`, QoS 1) on `topic`.
    pub fn subscribe(&self, client_id: &str, topic: &str) -> Sub {
        self.subscribe_with(&["-c", "-i", client_id, "-t", topic])
    }

    /// A mosquitto_sub logged in as `user` (its client id too) on `topic`.
    pub fn subscribe_as(&self, user: &str, password: &str, topic: &str) -> Sub {
        self.subscribe_with(&["-c", "-i", user, "-u", user, "-P", password, "-t", topic])
    }

    /// A mosquitto_sub (QoS 1) with `args`.
    pub fn subscribe_with(&self, args: &[&str]) -> Sub {
        let mut child = Command::new("mosquitto_sub")
            .args(self.args())
            .args(["-q", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let the subscription reach the broker before anything is published.
        std::thread::sleep(Duration::from_millis(300));
        Sub { child, rx }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running mosquitto_sub; each line is one message.
pub struct Sub {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Sub {
    /// The next line within `wait`.
    pub fn next(&self, wait: Duration) -> Option<String> {
        self.rx.recv_timeout(wait).ok()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
