//! Prometheus started by `backout::promserver` must not outlive its owner, even an owner killed by
//! SIGKILL that never runs `Drop`. Needs Debian's `prometheus` on PATH (`just deps`); fails
//! loudly otherwise.
//!
//! The owner is this test binary run again (`current_exe`, filtered to this test, with
//! [`OWNER_ENV`] set): it starts Prometheus, prints its port and directory, and waits; the test
//! SIGKILLs it and checks that no process is left serving or naming that port, and that the
//! temporary directory is gone.

use backout::promserver::PromServer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OWNER_ENV: &str = "BACKOUT_TEST_PROMETHEUS_OWNER";
const READY: &str = "prometheus-owner-ready";
const TEST_NAME: &str = "prometheus_dies_when_its_owner_is_killed";

/// The owner's side: Prometheus up, its port and storage directory on stdout, then wait until stdin closes (the test
/// process is gone) or this process is killed.
fn run_as_owner() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prom = rt.block_on(PromServer::scraping(&[])).unwrap();
    // libtest prints `test NAME ... ` first, on the same line.
    println!("{READY} {} {}", prom.port, prom.storage.display());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(prom);
}

/// Live (not zombie) processes whose command line names `--web.listen-address=127.0.0.1:PORT`:
/// Prometheus itself and anything started to watch it. Each with its argv[0].
fn processes_for_port(port: u16) -> Vec<(u32, String)> {
    let flag = format!("--web.listen-address=127.0.0.1:{port}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == &flag) {
            continue;
        }
        // A zombie is dead; it only waits for a parent (here: whatever adopted it) to reap it.
        let state = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
            .and_then(|rest| rest.chars().next());
        if state.is_some_and(|s| s != 'Z' && s != 'X') {
            found.push((pid, args[0].clone()));
        }
    }
    found
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Stops the owner gracefully (stdin closed) if the test ends before killing it.
struct Owner(Child);

impl Drop for Owner {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_dies_when_its_owner_is_killed() {
    if std::env::var_os(OWNER_ENV).is_some() {
        return run_as_owner();
    }
    let exe = std::env::current_exe().unwrap();
    let mut owner = Owner(
        Command::new(exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(OWNER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(owner.0.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once(READY).map(|(_, rest)| rest.trim().to_string()))
        .expect("the owner exited before Prometheus was ready (see its output above)");
    let (port, storage) = ready.split_once(' ').unwrap();
    let port: u16 = port.parse().unwrap();
    // The temporary directory Prometheus runs in (storage is `data` inside it).
    let dir = std::path::Path::new(storage)
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(dir.join("prometheus.yml").is_file(), "{dir:?}");

    let before = processes_for_port(port);
    assert!(
        before
            .iter()
            .any(|(_, argv0)| argv0.ends_with("prometheus")),
        "no prometheus process for port {port}: {before:?}"
    );
    assert!(port_open(port), "prometheus is not serving on {port}");

    owner.0.kill().unwrap(); // SIGKILL: no Drop, no cleanup in the owner
    owner.0.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_for_port(port);
        let open = port_open(port);
        let dir_left = dir.exists();
        if left.is_empty() && !open && !dir_left {
            return;
        }
        if Instant::now() > deadline {
            for (pid, _) in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "10 s after its owner was SIGKILLed, processes for port {port}: {left:?}; \
                 port still open: {open}; {dir:?} still there: {dir_left}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
