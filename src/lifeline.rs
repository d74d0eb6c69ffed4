//! Child processes that die with their owner, even an owner killed by SIGKILL (OOM killer, a
//! harness timeout) that never runs `Drop`.
//!
//! Prometheus for the demo and tests ([`crate::promserver`]) and the fleet benchmark's simulator
//! and daemon processes start through the same script, so "nothing outlives the run" is
//! implemented once.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The `sh -c` script that starts a child (`$1` is a directory to remove with it, then the
/// program and its arguments) so that it dies with its owner, even an owner killed by SIGKILL (OOM killer, a
/// harness timeout) that never runs `Drop`; the directory goes with it.
///
/// Why a shell and not `PR_SET_PDEATHSIG`: that needs a `pre_exec` hook, i.e. `unsafe`, which
/// this crate does without. Why this shape:
/// - The owner holds the only write end of a pipe on the script's stdin (std opens it
///   close-on-exec, so no other child inherits it); the kernel closes it when the owner dies,
///   however it dies, and the watcher's `read` returns at once: no polling, nothing to tune. The
///   pipe is moved to fd 3 because an asynchronous list in a non-interactive shell gets
///   `/dev/null` as its stdin; the program keeps the `/dev/null` stdin it always had.
/// - The shell `exec`s the program, so the [`Child`] *is* that program: its pid, `kill`, `try_wait`
///   and exit status mean what they meant when it was spawned directly, and stdout/stderr go to
///   where the caller sent them. The watcher is a background subshell forked just before, so `$$`
///   in it is that pid. As an asynchronous list it ignores SIGINT: a Ctrl-C reaches the program
///   as before, and the watcher stays until the owner lets it go.
/// - A normal stop first writes a line ([`Tied::stop`]): `read` succeeds and the watcher
///   exits without touching anything; only EOF (the owner died) kills.
/// - A pid can be reused once the program has exited and been reaped, and the watcher must not
///   kill a stranger: it acts only while it is still the program's child (the parent pid in
///   `/proc/self/stat` is `$$`). It is reparented only when the program's last thread is gone, so
///   the same check tells when the files are closed and the directory can be removed.
/// - SIGKILL, like [`Tied::stop`]: throw-away storage, nothing to flush.
///
/// POSIX `sh` (Debian's `/bin/sh` is dash) and Linux `/proc`.
pub const SCRIPT: &str = r#"dir=$1; shift
exec 3<&0 </dev/null
{
  read -r _ <&3 && exit
  read -r _ _ _ ppid _ </proc/self/stat; [ "$ppid" = "$$" ] || exit
  kill -KILL "$$"
  while read -r _ _ _ ppid _ </proc/self/stat && [ "$ppid" = "$$" ]; do sleep 0.1; done
  rm -rf -- "$dir"
} &
exec "$@" 3<&-"#;

/// A `Command` that runs `program` through [`SCRIPT`]; `dir` is removed when the owner dies.
/// Add arguments, stdout and stderr, then [`Tied::spawn`] it.
pub fn command(dir: &Path, program: &Path) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", SCRIPT, "sh"]).arg(dir).arg(program);
    cmd.stdin(Stdio::piped());
    cmd
}

/// A child started through [`command`]: killed when dropped, and by its watcher when the owner
/// dies without dropping it.
pub struct Tied {
    child: Option<Child>,
    lifeline: Option<ChildStdin>,
}

impl Tied {
    /// Spawns `cmd` (built by [`command`]) and keeps the write end of its lifeline.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Tied> {
        let mut child = cmd.spawn()?;
        let lifeline = child.stdin.take();
        Ok(Tied {
            child: Some(child),
            lifeline,
        })
    }

    /// The program's pid (the shell `exec`ed it).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The program's stdout, when the command piped it (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// `Some(status)` once the program has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills the program now and reaps it. Idempotent.
    pub fn stop(&mut self) {
        // Let the watcher go before reaping, so it never holds a pid that was reused.
        if let Some(mut pipe) = self.lifeline.take() {
            let _ = pipe.write_all(b"\n");
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        self.stop();
    }
}
