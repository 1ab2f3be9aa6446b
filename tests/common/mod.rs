//! Test support: start the real `relaybox` binary on port 0 with its own data directory, read
//! verification codes from a command verifier, and drive clients through the SDK.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relaybox::client::{Client, Event};

pub mod raw;

pub const BIN: &str = env!("CARGO_BIN_EXE_relaybox");

/// How long a test waits for the relay or for an event before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A relay process with its own temporary directory.
pub struct Relay {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub addr: String,
    /// The public HTTP listener (`http=` in the ready line).
    pub http_addr: String,
    /// The operator API's address (`admin=` in the ready line).
    pub admin_addr: String,
    /// Extra config lines appended to the generated config.
    extra: String,
    starts: usize,
    /// Environment variables of the next start (e.g. a failpoint).
    pub envs: Vec<(String, String)>,
}

impl Relay {
    /// Starts a relay with the default test config.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a relay; `extra` is TOML appended to the test config (e.g. a `[limits]` table).
    pub fn start_with(extra: &str) -> Self {
        Self::start_prepared(extra, |_| {})
    }

    /// Like [`Relay::start_with`], with `prepare` run before the first start (mount something
    /// on the data directory, set `envs`).
    pub fn start_prepared(extra: &str, prepare: impl FnOnce(&mut Relay)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Self {
            dir,
            child: None,
            addr: String::new(),
            http_addr: String::new(),
            admin_addr: String::new(),
            extra: extra.to_owned(),
            starts: 0,
            envs: Vec::new(),
        };
        r.write_config(None);
        prepare(&mut r);
        r.spawn();
        r
    }

    /// The relay's process id (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("relay running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn codes_dir(&self) -> PathBuf {
        self.dir.path().join("codes")
    }

    pub fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("relay-{n}.log"))
    }

    /// Every log the relay wrote so far, concatenated.
    pub fn logs(&self) -> String {
        (0..self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    fn write_config(&self, ports: Option<(u16, u16)>) {
        std::fs::create_dir_all(self.codes_dir()).unwrap();
        let codes = self.codes_dir();
        let (tcp_port, http_port) = ports.unwrap_or((0, 0));
        let listen = format!("127.0.0.1:{tcp_port}");
        let http = format!("127.0.0.1:{http_port}");
        // A restart keeps the admin port too, like the TCP and HTTP ports.
        let admin_port = match ports {
            Some(_) => self.admin_addr.rsplit(':').next().unwrap_or("0"),
            None => "0",
        };
        let extra = &self.extra;
        let registration = if extra.contains("[registration]") {
            String::new()
        } else {
            format!(
                "[registration]\nverifier = \"command\"\ncodes_per_address_per_hour = 10000\nregistrations_per_address_per_hour = 10000\ncommand = [\"sh\", \"-c\", \"printf %s {{code}} > '{}/{{phone}}'\"]\n",
                codes.display()
            )
        };
        // Tests send in bursts from one host: the abuse limits are opened unless a test sets its
        // own `[abuse]` table.
        let abuse = if extra.contains("[abuse]") {
            ""
        } else {
            "[abuse]\nsends_per_minute = 100000\nnew_conversations_per_minute = 100000\n"
        };
        let cfg = format!(
            "[relay]\ndata_dir = \"{}\"\nshutdown_grace = \"3s\"\n\n[listen]\ntcp = \"{listen}\"\nhttp = \"{http}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\n{registration}\n{abuse}\n[log]\nlevel = \"info,relaybox=debug\"\n\n{extra}\n",
            self.data_dir().display()
        );
        std::fs::write(self.dir.path().join("relaybox.toml"), cfg).unwrap();
    }

    fn spawn(&mut self) {
        self.spawn_retrying(20);
    }

    fn spawn_retrying(&mut self, port_retries: u32) {
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("relaybox.toml"))
            .env_remove("RUST_LOG")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn relaybox");
        self.child = Some(child);
        let path = self.log_path(self.starts);
        self.starts += 1;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("Relay ready.")) {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("tcp="))
                    .expect("tcp= in ready line");
                self.addr = addr.to_owned();
                let http = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http="))
                    .expect("http= in ready line");
                self.http_addr = http.to_owned();
                self.admin_addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("admin="))
                    .expect("admin= in ready line")
                    .to_owned();
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // A restart reuses its ports; another test's short-lived outgoing connection
                // may hold one of them for a moment (the kernel hands ephemeral ports from the
                // same range). Try again briefly rather than fail on that race.
                if self.starts > 1 && port_retries > 0 && text.contains("Address already in use") {
                    std::thread::sleep(Duration::from_millis(250));
                    self.child = None;
                    return self.spawn_retrying(port_retries - 1);
                }
                panic!("relay exited with {status} before it was ready:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "relay not ready in time:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port(&self) -> u16 {
        port_of(&self.addr)
    }

    /// SIGTERM and wait (graceful); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "relay did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts a relay on a data directory made by `relaybox restore` from `archive`.
    pub fn start_from_backup(archive: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Self {
            dir,
            child: None,
            addr: String::new(),
            http_addr: String::new(),
            admin_addr: String::new(),
            extra: String::new(),
            starts: 0,
            envs: Vec::new(),
        };
        r.write_config(None);
        let out = Command::new(BIN)
            .arg("restore")
            .arg(archive)
            .arg("--data-dir")
            .arg(r.data_dir())
            .output()
            .expect("run relaybox restore");
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        r.spawn();
        r
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned()
    }

    /// Runs `relaybox <args>` against this relay's config; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("relaybox.toml"))
            .args(args)
            .env_remove("RELAYBOX_ADMIN_TOKEN")
            .output()
            .expect("run relaybox");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts again on the same data directory and the same port (clients keep their address).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the relay first");
        self.write_config(Some((self.port(), port_of(&self.http_addr))));
        self.spawn();
    }

    /// The code the command verifier "sent" to `phone` (E.164).
    pub fn code_for(&self, phone: &str) -> String {
        let path = self.codes_dir().join(phone);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(mut f) = std::fs::File::open(&path) {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                if !s.is_empty() {
                    let _ = std::fs::remove_file(&path);
                    return s.trim().to_owned();
                }
            }
            assert!(Instant::now() < deadline, "no code for {phone}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `relaybox client --home <temp dir>/<home> --relay <this relay> <args>`.
    pub fn client_cli(&self, home: &str, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("client")
            .arg("--home")
            .arg(self.dir.path().join(home))
            .arg("--relay")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run relaybox client")
    }

    /// Registers `phone` (E.164) through the CLI in client home `home`.
    pub fn cli_user(&self, home: &str, phone: &str) {
        let out = self.client_cli(home, &["register", phone]);
        assert!(out.status.success(), "register: {}", output_text(&out));
        let code = self.code_for(phone);
        let out = self.client_cli(home, &["verify", phone, &code]);
        assert!(out.status.success(), "verify: {}", output_text(&out));
    }

    /// A registered client with its own home directory under this relay's temp dir.
    pub async fn user(&self, name: &str, phone: &str) -> Client {
        let home = self.dir.path().join(format!("client-{name}"));
        let mut c = Client::open(&home, Some(&self.addr)).unwrap();
        c.register(phone).await.unwrap();
        let code = self.code_for(phone);
        c.verify(phone, &code).await.unwrap();
        c
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// A command's stdout and stderr, for assertions and failure messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The next event within [`PATIENCE`].
pub async fn next_event(c: &mut Client) -> Event {
    tokio::time::timeout(PATIENCE, c.next_event())
        .await
        .expect("timed out waiting for an event")
        .expect("event")
}

/// Whether any event arrives within `wait`.
pub async fn quiet_for(c: &mut Client, wait: Duration) -> Option<Event> {
    tokio::time::timeout(wait, c.next_event())
        .await
        .ok()
        .map(|r| r.expect("event"))
}

/// Searches every file under `dir` for `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}
