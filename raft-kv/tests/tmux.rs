//! The terminal UI in a real terminal: tmux runs `raft-kv`, `send-keys` types, and
//! `capture-pane` reads the screen. Each test skips (with a message) when tmux is not
//! installed; CI installs it.
//!
//! - `node_ui_appends_stops_starts_and_switches_log_level`: Beta Tests 8 to 11 and 14 as
//!   the original's user did them, by keyboard on the node screen;
//! - `init_asks_for_what_is_missing_on_a_terminal`: Beta Test 3 typed in, password and all;
//! - `demo_ui_shows_an_election_and_a_failover`: the newcomer's first look.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A private tmux server (its own socket) with one session, killed on drop.
struct Tmux {
    socket: String,
    session: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn tmux_available() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: tmux is not installed (apt-get install -y tmux); terminal UI test not run"
        );
    }
    ok
}

impl Tmux {
    /// Runs `shell_command` in a new detached `width` x `height` session in `dir`. The
    /// session stays open after the command ends, showing `EXITED <code>`.
    fn start(dir: &Path, shell_command: &str, width: u16, height: u16) -> Tmux {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let t = Tmux {
            socket: format!("raft-kv-test-{}-{n}", std::process::id()),
            session: format!("s{n}"),
        };
        let wrapped = format!("{shell_command}; echo EXITED $?; sleep 120");
        let status = Command::new("tmux")
            .args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d"])
            .args([
                "-s",
                &t.session,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .args(["-c", dir.to_str().unwrap()])
            .arg(wrapped)
            .env_remove("RAFT_KV_PASSWORD")
            .env_remove("RAFT_KV_CONFIG")
            .env("TERM", "xterm-256color")
            .status()
            .expect("cannot run tmux");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("cannot run tmux")
    }

    /// Presses keys (tmux key names: `Enter`, `Tab`, `Escape`, or plain characters).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", &self.session, "-l", text])
            .status
            .success());
    }

    /// The visible screen.
    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// Waits until the screen shows every one of `parts`; returns it.
    fn wait_screen(&self, what: &str, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if parts.iter().all(|p| screen.contains(p)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what} ({parts:?}); screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `pred` holds for the screen; returns it.
    fn wait_screen_with(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn node_ui_appends_stops_starts_and_switches_log_level() {
    if !tmux_available() {
        return;
    }
    let (mut c, _) = Cluster::init(3, &["--no-encrypt", "--ephemeral"], &[]);
    c.start("node2");
    c.start("node3");
    let cmd = format!(
        "{} node --config {} --id node1",
        shell_quote(BIN),
        shell_quote(c.config_str())
    );
    let t = Tmux::start(c.dir.path(), &cmd, 120, 32);
    t.wait_screen(
        "node1's screen shows it found the cluster and its leader",
        &["node1 (n1)", "Cluster: found", "Committed log", "Debug log"],
    );
    t.wait_screen_with("a leader is shown", |s| {
        s.contains("Leader: node") && !s.contains("Leader: none")
    });

    // Beta Test 8: type Hello / World and append; Beta Test 9: it shows as committed.
    t.keys(&["a"]);
    t.type_text("Hello");
    t.keys(&["Tab"]);
    t.type_text("World");
    t.keys(&["Enter"]);
    t.wait_screen(
        "Hello = World is committed on node1's screen",
        &["Hello = World"],
    );
    for n in ["node2", "node3"] {
        c.wait_value(n, "Hello", "World");
    }

    // Beta Test 14: the log level changes live; the pane's title says which.
    t.keys(&["l"]);
    t.wait_screen("the log pane is at debug", &["level: debug"]);
    t.keys(&["l"]);
    t.wait_screen("the log pane is at trace", &["level: trace"]);
    t.wait_screen("trace lines show the message flow", &[" <- n"]);
    t.keys(&["L", "L"]);
    t.wait_screen("the log pane is back at info", &["level: info"]);

    // Beta Test 10: stop: the node shows as stopped and its log is gone.
    t.keys(&["s"]);
    let s = t.wait_screen(
        "node1 shows as stopped",
        &["Role: stopped", "press r to start"],
    );
    assert!(!s.contains("Hello = World"), "{s}");

    // Beta Test 11: start: it rejoins and its log is rebuilt.
    t.keys(&["r"]);
    t.wait_screen(
        "node1 runs again with its log rebuilt",
        &["Hello = World", "Cluster: found"],
    );
    assert!(!t.screen().contains("Role: stopped"));

    // Quit leaves the terminal cleanly with exit code 0.
    t.keys(&["q"]);
    t.wait_screen("raft-kv exits", &["EXITED 0"]);
}

#[test]
fn init_asks_for_what_is_missing_on_a_terminal() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!("{} init --out b3.toml", shell_quote(BIN));
    let t = Tmux::start(dir.path(), &cmd, 150, 40);
    let answer = |prompt: &str, text: &str| {
        t.wait_screen(&format!("init asks {prompt:?}"), &[prompt]);
        t.type_text(text);
        t.keys(&["Enter"]);
    };
    // Beta Test 3: name, 3 nodes, encryption with a password, ephemeral, 5 attempts.
    answer("Cluster name", "My first cluster");
    answer("Number of nodes", "3");
    answer("Raft port of node1 [7001]", "");
    answer("Encrypt traffic", "yes");
    answer("Where do nodes read the password from?", "file");
    answer("Password file [raft-kv.password]", "");
    answer("New cluster password", "correct horse battery staple");
    answer("Repeat the password", "correct horse battery staple");
    answer("persistent storage", "no");
    answer("Join retry attempts", "5");
    let s = t.wait_screen("init finishes", &["EXITED 0"]);
    assert!(
        s.contains("Join retry time: 25 s (5 attempts x 5 s)"),
        "{s}"
    );
    assert!(
        s.contains("Encryption: on (password from file raft-kv.password)"),
        "{s}"
    );
    // The password was not echoed, and is not in the config.
    assert!(!s.contains("correct horse"), "{s}");
    let config = std::fs::read_to_string(dir.path().join("b3.toml")).unwrap();
    assert!(!config.contains("correct horse"), "{config}");
    let pw = dir.path().join("raft-kv.password");
    assert_eq!(
        std::fs::read_to_string(&pw).unwrap(),
        "correct horse battery staple\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pw).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the password file must be private: {mode:o}"
        );
    }
    let loaded = raft_kv::config::ClusterConfig::load(&dir.path().join("b3.toml")).unwrap();
    assert_eq!(
        loaded.password().unwrap().as_deref(),
        Some("correct horse battery staple")
    );
}

#[test]
fn demo_ui_shows_an_election_and_a_failover() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!("{} demo", shell_quote(BIN));
    let t = Tmux::start(dir.path(), &cmd, 140, 40);
    t.wait_screen(
        "the three nodes show side by side and one leads",
        &[
            "[1] node1",
            "[2] node2",
            "[3] node3",
            "UAS running",
            "Cluster log",
        ],
    );
    t.keys(&["a"]);
    t.type_text("k1");
    t.keys(&["Tab"]);
    t.type_text("v1");
    t.keys(&["Enter"]);
    t.wait_screen_with("k1 = v1 is committed on all three nodes", |s| {
        s.matches("k1 = v1").count() >= 3
    });
    t.keys(&["k"]);
    t.wait_screen("the leader was killed", &["killed the leader", "press"]);
    t.wait_screen("a survivor leads", &["UAS running"]);
    // Restart every stopped node with its number key; all three hold k1 again.
    let s = t.screen();
    for n in 1..=3 {
        if s.contains(&format!("press {n} to start")) {
            t.keys(&[&n.to_string()]);
        }
    }
    t.wait_screen_with("the restarted node caught up", |s| {
        s.matches("k1 = v1").count() >= 3 && !s.contains("to start)")
    });
    t.keys(&["q"]);
    t.wait_screen("the demo exits", &["EXITED 0"]);
}
