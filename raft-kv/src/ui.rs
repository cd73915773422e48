//! The terminal screens (ratatui on crossterm): one node (`raft-kv node`) and the
//! three-node demo (`raft-kv demo`).
//!
//! Drawing is separate from running: [`draw_node`] and [`draw_demo`] render a
//! [`HostView`] (and log lines) into any ratatui backend, so tests render them into a
//! `TestBackend` and read the screen; [`run_node_ui`] and [`run_demo_ui`] own the
//! terminal, the key loop and the actions.
//!
//! Keys: `a` append a key/value (Tab switches field, Enter appends, Esc cancels),
//! `s` stop, `r` start, `l`/`L` more/less verbose log, Up/Down/PgUp/PgDn scroll the log,
//! `q` quit. The demo adds `1`/`2`/`3` to stop or start a node and `k` to kill the leader.

use std::io::Stdout;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::{Frame, Terminal};

use crate::client::{Request, Response};
use crate::cluster::{HostView, NodeHost};
use crate::logger::{self, LogLine};

/// Committed entries fetched for a screen.
const SCREEN_ENTRIES_MAX: usize = 200;
/// Log lines fetched for the log pane.
const SCREEN_LOG_LINES_MAX: usize = 1_000;
/// How often the screen redraws without a key press.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// Which form field has the cursor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Field {
    /// The key.
    #[default]
    Key,
    /// The value.
    Value,
}

/// The append form: a key and a value (the original's two text boxes and Append button).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// Whether the form has the keyboard.
    pub editing: bool,
    /// The key typed so far.
    pub key: String,
    /// The value typed so far.
    pub value: String,
    /// The focused field.
    pub focus: Field,
}

/// What a key press asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do beyond redrawing.
    None,
    /// Leave the program.
    Quit,
    /// Append `key = value` to the replicated log.
    Append {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Stop this node.
    Stop,
    /// Start this node.
    Start,
    /// Toggle demo node `n` (from 1): stop it if it runs, start it if not.
    Toggle(usize),
    /// Kill the leader (demo).
    KillLeader,
    /// More verbose log.
    LevelUp,
    /// Less verbose log.
    LevelDown,
}

/// The screen's own state, beyond what the node reports.
#[derive(Clone, Debug, Default)]
pub struct Screen {
    /// The append form.
    pub form: Form,
    /// Log pane scroll: lines up from the newest.
    pub log_scroll: usize,
    /// The latest notice for the status line.
    pub notice: String,
}

impl Screen {
    /// Handles a key press; returns what the caller should do.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.form.editing {
            return self.on_form_key(key);
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('a') | KeyCode::Enter => {
                self.form.editing = true;
                self.form.focus = Field::Key;
                Action::None
            }
            KeyCode::Char('s') => Action::Stop,
            KeyCode::Char('r') => Action::Start,
            KeyCode::Char('k') => Action::KillLeader,
            KeyCode::Char(c @ '1'..='9') => Action::Toggle(c as usize - '0' as usize),
            KeyCode::Char('l') | KeyCode::Char('+') => Action::LevelUp,
            KeyCode::Char('L') | KeyCode::Char('-') => Action::LevelDown,
            KeyCode::Up => {
                self.log_scroll += 1;
                Action::None
            }
            KeyCode::Down => {
                self.log_scroll = self.log_scroll.saturating_sub(1);
                Action::None
            }
            KeyCode::PageUp => {
                self.log_scroll += 10;
                Action::None
            }
            KeyCode::PageDown => {
                self.log_scroll = self.log_scroll.saturating_sub(10);
                Action::None
            }
            KeyCode::End => {
                self.log_scroll = 0;
                Action::None
            }
            _ => Action::None,
        }
    }

    fn on_form_key(&mut self, key: KeyEvent) -> Action {
        let form = &mut self.form;
        let field = match form.focus {
            Field::Key => &mut form.key,
            Field::Value => &mut form.value,
        };
        match key.code {
            KeyCode::Esc => form.editing = false,
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Down | KeyCode::Up => {
                form.focus = match form.focus {
                    Field::Key => Field::Value,
                    Field::Value => Field::Key,
                };
            }
            KeyCode::Backspace => {
                field.pop();
            }
            KeyCode::Char(c) if field.chars().count() < 200 => field.push(c),
            KeyCode::Enter if form.focus == Field::Key => form.focus = Field::Value,
            KeyCode::Enter => {
                if form.key.is_empty() {
                    self.notice = "type a key first".into();
                    form.focus = Field::Key;
                    return Action::None;
                }
                // As in the original, the values disappear and the request goes off.
                let action = Action::Append {
                    key: std::mem::take(&mut form.key),
                    value: std::mem::take(&mut form.value),
                };
                form.editing = false;
                form.focus = Field::Key;
                return action;
            }
            _ => {}
        }
        Action::None
    }
}

fn role_style(view: &HostView) -> Style {
    let color = match view.role.as_str() {
        "leader" => Color::Green,
        "follower" => Color::Cyan,
        "stopped" => Color::Red,
        _ => Color::Yellow,
    };
    Style::new().fg(color).add_modifier(Modifier::BOLD)
}

fn uas_span(view: &HostView) -> Span<'static> {
    if view.is_leader {
        Span::styled(
            "UAS running",
            Style::new().fg(Color::Black).bg(Color::Green),
        )
    } else {
        Span::styled("UAS stopped", Style::new().fg(Color::DarkGray))
    }
}

fn header_lines(view: &HostView) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    vec![
        Line::from(vec![
            Span::raw("Role: "),
            Span::styled(view.role.clone(), role_style(view)),
            Span::raw("   Term: "),
            Span::styled(view.term.to_string(), bold),
            Span::raw("   Leader: "),
            Span::styled(view.leader_text(), bold),
            Span::raw("   "),
            uas_span(view),
        ]),
        Line::from(format!(
            "Commit: {}   Applied: {}   Last: {}   Cluster: {}",
            view.commit_index, view.applied_index, view.last_index, view.cluster
        )),
        Line::from(format!(
            "Raft {} · client {} · {} · {} storage{}",
            view.raft_addr,
            view.client_addr,
            if view.encrypted {
                "encrypted"
            } else {
                "unencrypted"
            },
            if view.persistent {
                "persistent"
            } else {
                "ephemeral"
            },
            view.client_port.as_ref().map_or(String::new(), |c| format!(
                " · {} clients ({} in handshake)",
                c.open, c.unauthenticated
            ))
        )),
        Line::from(if view.peers.is_empty() {
            "Followers: (shown on the leader)".to_string()
        } else {
            let peers: Vec<String> = view
                .peers
                .iter()
                .map(|p| format!("{} at {} (lag {})", p.name, p.match_index, p.lag))
                .collect();
            format!("Followers: {}", peers.join(", "))
        }),
    ]
}

fn entries_paragraph(view: &HostView, height: u16) -> Paragraph<'static> {
    let mut lines: Vec<Line> = Vec::new();
    if !view.running {
        lines.push(Line::styled(
            "(stopped: press r to start)",
            Style::new().fg(Color::Red),
        ));
        if let Some(e) = &view.last_error {
            lines.push(Line::styled(
                format!("last start failed: {e}"),
                Style::new().fg(Color::Red),
            ));
        }
    } else if view.entries.is_empty() {
        lines.push(Line::styled(
            "(no entries yet: press a to append)",
            Style::new().fg(Color::DarkGray),
        ));
    }
    let shown = (height as usize).saturating_sub(2).max(1);
    let skip = view.entries.len().saturating_sub(shown);
    for e in view.entries.iter().skip(skip) {
        let style = if e.replayed {
            Style::new().fg(Color::Blue)
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{:>5} ", e.index), Style::new().fg(Color::DarkGray)),
            Span::styled(e.op.to_string(), style),
        ]));
    }
    Paragraph::new(lines)
        .block(Block::bordered().title(format!(" Committed log ({}) ", view.entries_total)))
}

fn log_paragraph(lines: &[LogLine], scroll: usize, height: u16, title: &str) -> Paragraph<'static> {
    let shown = (height as usize).saturating_sub(2).max(1);
    let end = lines.len().saturating_sub(scroll.min(lines.len()));
    let start = end.saturating_sub(shown);
    let text: Vec<Line> = lines[start..end]
        .iter()
        .map(|l| {
            let color = match l.level {
                log::Level::Error => Color::Red,
                log::Level::Warn => Color::Yellow,
                log::Level::Info => Color::Reset,
                log::Level::Debug => Color::Cyan,
                log::Level::Trace => Color::DarkGray,
            };
            Line::styled(l.to_string(), Style::new().fg(color))
        })
        .collect();
    let scrolled = if scroll > 0 {
        format!(" (scrolled up {scroll})")
    } else {
        String::new()
    };
    Paragraph::new(text).block(Block::bordered().title(format!(
        " {title} [level: {}]{scrolled} ",
        logger::level().to_string().to_lowercase()
    )))
}

fn form_paragraph(form: &Form) -> Paragraph<'static> {
    let field = |label: &str, text: &str, focused: bool| {
        let style = if form.editing && focused {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::new().add_modifier(Modifier::UNDERLINED)
        };
        let cursor = if form.editing && focused { "_" } else { "" };
        vec![
            Span::raw(format!("{label}: ")),
            Span::styled(format!("{text}{cursor}"), style),
            Span::raw("   "),
        ]
    };
    let mut spans = field("Key", &form.key, form.focus == Field::Key);
    spans.extend(field("Value", &form.value, form.focus == Field::Value));
    spans.push(Span::styled(
        if form.editing {
            "Enter: append · Tab: next field · Esc: cancel"
        } else {
            "press a to type an entry"
        },
        Style::new().fg(Color::DarkGray),
    ));
    Paragraph::new(Line::from(spans)).block(Block::bordered().title(" Append entry "))
}

/// Draws the single-node screen.
pub fn draw_node(frame: &mut Frame, view: &HostView, log_lines: &[LogLine], screen: &Screen) {
    let [header, middle, form, help] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Min(6),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let title = format!(
        " raft-kv · cluster {:?} · {} ",
        view.cluster_name,
        view.title()
    );
    frame.render_widget(
        Paragraph::new(header_lines(view)).block(Block::bordered().title(title)),
        header,
    );
    let [entries, logs] =
        Layout::horizontal([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(middle);
    frame.render_widget(entries_paragraph(view, entries.height), entries);
    frame.render_widget(
        log_paragraph(log_lines, screen.log_scroll, logs.height, "Debug log"),
        logs,
    );
    frame.render_widget(form_paragraph(&screen.form), form);
    draw_help(
        frame,
        help,
        "a append · s stop · r start · l/L log level · ↑/↓ scroll log · q quit",
        &screen.notice,
    );
}

/// Draws the demo screen: the nodes side by side, the shared log below.
pub fn draw_demo(frame: &mut Frame, views: &[HostView], log_lines: &[LogLine], screen: &Screen) {
    let [nodes, logs, form, help] = Layout::vertical([
        Constraint::Percentage(55),
        Constraint::Min(5),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let columns = Layout::horizontal(vec![
        Constraint::Ratio(1, views.len().max(1) as u32);
        views.len().max(1)
    ])
    .split(nodes);
    for (i, (view, area)) in views.iter().zip(columns.iter()).enumerate() {
        draw_demo_node(frame, *area, i + 1, view);
    }
    frame.render_widget(
        log_paragraph(log_lines, screen.log_scroll, logs.height, "Cluster log"),
        logs,
    );
    frame.render_widget(form_paragraph(&screen.form), form);
    draw_help(
        frame,
        help,
        "a append · 1/2/3 stop/start node · k kill leader · l/L log level · q quit",
        &screen.notice,
    );
}

fn draw_demo_node(frame: &mut Frame, area: Rect, key: usize, view: &HostView) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(view.role.clone(), role_style(view)),
            Span::raw(if view.running { "  term " } else { "" }),
            Span::styled(
                if view.running {
                    view.term.to_string()
                } else {
                    String::new()
                },
                bold,
            ),
        ]),
        Line::from(vec![
            Span::raw("leader "),
            Span::styled(view.leader_text(), bold),
        ]),
        Line::from(uas_span(view)),
        Line::from(format!(
            "commit {} · applied {}",
            view.commit_index, view.applied_index
        )),
        Line::raw(""),
    ];
    if !view.running {
        lines.push(Line::styled(
            format!("(stopped: press {key} to start)"),
            Style::new().fg(Color::Red),
        ));
    }
    let room = (area.height as usize)
        .saturating_sub(2 + lines.len())
        .max(1);
    let skip = view.entries.len().saturating_sub(room);
    for e in view.entries.iter().skip(skip) {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>4} ", e.index), Style::new().fg(Color::DarkGray)),
            Span::raw(e.op.to_string()),
        ]));
    }
    let block = Block::bordered()
        .title(format!(" [{key}] {} ", view.title()))
        .border_style(if view.is_leader {
            Style::new().fg(Color::Green)
        } else {
            Style::new()
        });
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_help(frame: &mut Frame, area: Rect, keys: &str, notice: &str) {
    let line = Line::from(vec![
        Span::styled(keys.to_string(), Style::new().fg(Color::DarkGray)),
        Span::raw("   "),
        Span::styled(notice.to_string(), Style::new().fg(Color::Yellow)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// Puts the terminal back however the UI ends (including a panic).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<(Self, Terminal<CrosstermBackend<Stdout>>)> {
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let guard = TerminalGuard;
        crossterm::execute!(std::io::stdout(), EnterAlternateScreen)
            .context("cannot switch to the alternate screen")?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = crossterm::execute!(std::io::stdout(), LeaveAlternateScreen);
    }
}

/// Outcomes of background actions, shown in the status line.
type Notices = (Sender<String>, Receiver<String>);

/// Runs a slow action (a write, a start) off the UI thread; its outcome becomes a notice.
fn in_background(notices: &Sender<String>, f: impl FnOnce() -> String + Send + 'static) {
    let tx = notices.clone();
    let _ = std::thread::Builder::new()
        .name("kv-ui-action".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
}

fn append_via(host: &NodeHost, key: String, value: String) -> String {
    let shown = format!("{key} = {value}");
    match crate::server::handle(host, Request::Put { key, value }) {
        Response::Written { .. } => format!("committed {shown}"),
        Response::Error { message, .. } => format!("append failed: {message}"),
        other => format!("append: unexpected answer {other:?}"),
    }
}

fn apply_level(action: &Action) -> Option<String> {
    let level = match action {
        Action::LevelUp => logger::next_level(logger::level()),
        Action::LevelDown => logger::previous_level(logger::level()),
        _ => return None,
    };
    logger::set_level(level);
    Some(format!("log level: {}", level.to_string().to_lowercase()))
}

/// Runs the single-node terminal UI until the user quits. The node is started first.
///
/// # Errors
/// The terminal cannot be set up.
pub fn run_node_ui(host: Arc<NodeHost>) -> Result<()> {
    let logger = logger::get().context("the logger is not installed")?;
    let (guard, mut terminal) = TerminalGuard::enter()?;
    let (tx, rx): Notices = crossbeam_channel::unbounded();
    let mut screen = Screen {
        notice: format!("{} starting...", host.entry().name),
        ..Screen::default()
    };
    {
        let host = host.clone();
        in_background(&tx, move || match host.start() {
            Ok(()) => format!("{} started", host.entry().name),
            Err(e) => format!("start failed: {e:#}"),
        });
    }
    loop {
        while let Ok(n) = rx.try_recv() {
            screen.notice = n;
        }
        let view = host.view(SCREEN_ENTRIES_MAX);
        let lines = logger.tail(SCREEN_LOG_LINES_MAX);
        terminal.draw(|f| draw_node(f, &view, &lines, &screen))?;
        if !event::poll(REDRAW_INTERVAL)? {
            continue;
        }
        let TermEvent::Key(key) = event::read()? else {
            continue;
        };
        let action = screen.on_key(key);
        if let Some(notice) = apply_level(&action) {
            screen.notice = notice;
            continue;
        }
        match action {
            Action::Quit => break,
            Action::Append { key, value } => {
                screen.notice = format!("appending {key} = {value} ...");
                let host = host.clone();
                in_background(&tx, move || append_via(&host, key, value));
            }
            Action::Stop => {
                host.stop();
                screen.notice = format!("{} stopped", host.entry().name);
            }
            Action::Start => {
                screen.notice = format!("{} starting...", host.entry().name);
                let host = host.clone();
                in_background(&tx, move || match host.start() {
                    Ok(()) => format!("{} started", host.entry().name),
                    Err(e) => format!("start failed: {e:#}"),
                });
            }
            _ => {}
        }
    }
    drop(terminal);
    drop(guard);
    host.stop();
    Ok(())
}

/// Runs the demo's terminal UI over `hosts` (already started) until the user quits.
///
/// # Errors
/// The terminal cannot be set up.
pub fn run_demo_ui(hosts: &[Arc<NodeHost>]) -> Result<()> {
    let logger = logger::get().context("the logger is not installed")?;
    let (guard, mut terminal) = TerminalGuard::enter()?;
    let (tx, rx): Notices = crossbeam_channel::unbounded();
    let mut screen = Screen {
        notice: "watch the election; then press a to append".into(),
        ..Screen::default()
    };
    let started = Instant::now();
    loop {
        while let Ok(n) = rx.try_recv() {
            screen.notice = n;
        }
        let views: Vec<HostView> = hosts.iter().map(|h| h.view(SCREEN_ENTRIES_MAX)).collect();
        let lines = logger.tail(SCREEN_LOG_LINES_MAX);
        terminal.draw(|f| draw_demo(f, &views, &lines, &screen))?;
        if !event::poll(REDRAW_INTERVAL)? {
            continue;
        }
        let TermEvent::Key(key) = event::read()? else {
            continue;
        };
        let action = screen.on_key(key);
        if let Some(notice) = apply_level(&action) {
            screen.notice = notice;
            continue;
        }
        match action {
            Action::Quit => break,
            Action::Append { key, value } => {
                // Any running node will do: followers forward to the leader.
                let target = views
                    .iter()
                    .position(|v| v.is_leader)
                    .or_else(|| views.iter().position(|v| v.running));
                let Some(i) = target else {
                    screen.notice = "every node is stopped: press 1, 2 or 3".into();
                    continue;
                };
                let host = hosts[i].clone();
                screen.notice = format!("appending {key} = {value} via {} ...", host.entry().name);
                in_background(&tx, move || append_via(&host, key, value));
            }
            Action::Toggle(n) if (1..=hosts.len()).contains(&n) => {
                let host = hosts[n - 1].clone();
                if host.is_running() {
                    host.stop();
                    screen.notice = format!("{} stopped", host.entry().name);
                } else {
                    screen.notice = format!("{} starting...", host.entry().name);
                    in_background(&tx, move || match host.start() {
                        Ok(()) => format!("{} restarted", host.entry().name),
                        Err(e) => format!("start failed: {e:#}"),
                    });
                }
            }
            Action::KillLeader => match views.iter().position(|v| v.is_leader) {
                Some(i) => {
                    hosts[i].stop();
                    screen.notice = format!(
                        "killed the leader {} at {:.1}s: watch the others elect",
                        hosts[i].entry().name,
                        started.elapsed().as_secs_f64()
                    );
                }
                None => screen.notice = "no leader right now".into(),
            },
            _ => {}
        }
    }
    drop(terminal);
    drop(guard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommittedEntry, Op};
    use ratatui::backend::TestBackend;

    fn view(name: &str, id: u64, role: &str, leader: Option<(u64, &str)>) -> HostView {
        HostView {
            name: name.into(),
            id,
            cluster_name: "My first cluster".into(),
            raft_addr: format!("127.0.0.1:700{id}"),
            client_addr: format!("127.0.0.1:710{id}"),
            encrypted: true,
            persistent: false,
            running: role != "stopped",
            role: role.into(),
            term: 3,
            leader: leader.map(|l| l.0),
            leader_name: leader.map(|l| l.1.to_string()),
            is_leader: role == "leader",
            commit_index: 2,
            applied_index: 2,
            last_index: 2,
            snapshot_index: 0,
            cluster: "found".into(),
            peers: if role == "leader" {
                vec![crate::cluster::PeerView {
                    name: "node3".into(),
                    match_index: 2,
                    lag: 0,
                }]
            } else {
                Vec::new()
            },
            membership: crate::cluster::MembershipView::default(),
            entries: if role == "stopped" {
                Vec::new()
            } else {
                vec![CommittedEntry {
                    index: 2,
                    op: Op::Put {
                        key: "Hello".into(),
                        value: "World".into(),
                    },
                    replayed: false,
                }]
            },
            entries_total: 1,
            uptime_ms: 1000,
            starts: 1,
            last_error: None,
            log_level: "info".into(),
            client_port: None,
            transport: None,
        }
    }

    fn log_line(message: &str) -> LogLine {
        LogLine {
            seq: 0,
            elapsed_s: 1.5,
            level: log::Level::Info,
            target: "raft_core".into(),
            message: message.into(),
        }
    }

    fn screen_text(terminal: &Terminal<TestBackend>) -> String {
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn node_screen_shows_role_leader_entries_and_log() {
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        let mut v = view("node2", 2, "leader", Some((2, "node2")));
        v.client_port = Some(crate::server::ClientPortView {
            open: 3,
            unauthenticated: 1,
            ..Default::default()
        });
        let lines = vec![log_line("n2 became leader at term 3")];
        let screen = Screen::default();
        terminal
            .draw(|f| draw_node(f, &v, &lines, &screen))
            .unwrap();
        let text = screen_text(&terminal);
        for want in [
            "My first cluster",
            "node2 (n2)",
            "Role: leader",
            "Term: 3",
            "Leader: node2",
            "UAS running",
            "Committed log (1)",
            "Hello = World",
            "Debug log",
            "n2 became leader at term 3",
            "Append entry",
            "encrypted",
            "Followers: node3 at 2 (lag 0)",
            "3 clients (1 in handshake)",
        ] {
            assert!(text.contains(want), "screen lacks {want:?}:\n{text}");
        }
    }

    #[test]
    fn stopped_node_screen_says_so_and_shows_no_entries() {
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        let mut v = view("node1", 1, "stopped", None);
        v.last_error = Some("cannot bind 127.0.0.1:7001".into());
        terminal
            .draw(|f| draw_node(f, &v, &[], &Screen::default()))
            .unwrap();
        let text = screen_text(&terminal);
        assert!(text.contains("last start failed: cannot bind"), "{text}");
        assert!(text.contains("Role: stopped"), "{text}");
        assert!(text.contains("UAS stopped"), "{text}");
        assert!(text.contains("press r to start"), "{text}");
        assert!(!text.contains("Hello = World"), "{text}");
    }

    #[test]
    fn demo_screen_shows_three_nodes_side_by_side() {
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        let views = vec![
            view("node1", 1, "follower", Some((2, "node2"))),
            view("node2", 2, "leader", Some((2, "node2"))),
            view("node3", 3, "stopped", None),
        ];
        terminal
            .draw(|f| {
                draw_demo(
                    f,
                    &views,
                    &[log_line("n2 became leader")],
                    &Screen::default(),
                )
            })
            .unwrap();
        let text = screen_text(&terminal);
        for want in [
            "[1] node1 (n1)",
            "[2] node2 (n2)",
            "[3] node3 (n3)",
            "follower",
            "leader",
            "UAS running",
            "press 3 to start",
            "Cluster log",
            "n2 became leader",
        ] {
            assert!(text.contains(want), "screen lacks {want:?}:\n{text}");
        }
        // The three panels share one row: node1's and node3's titles are on one line.
        let title_row = text.lines().find(|l| l.contains("[1] node1")).unwrap();
        assert!(title_row.contains("[3] node3"), "{title_row}");
    }

    #[test]
    fn form_types_a_key_and_value_and_appends() {
        let mut s = Screen::default();
        assert_eq!(s.on_key(key(KeyCode::Char('a'))), Action::None);
        assert!(s.form.editing);
        for c in "Hello".chars() {
            s.on_key(key(KeyCode::Char(c)));
        }
        s.on_key(key(KeyCode::Tab));
        for c in "World".chars() {
            s.on_key(key(KeyCode::Char(c)));
        }
        // While typing, letters are text, not commands.
        s.on_key(key(KeyCode::Char('q')));
        s.on_key(key(KeyCode::Backspace));
        assert_eq!(
            s.on_key(key(KeyCode::Enter)),
            Action::Append {
                key: "Hello".into(),
                value: "World".into()
            }
        );
        // The values disappear, as in the original.
        assert_eq!(s.form, Form::default());
        assert_eq!(s.on_key(key(KeyCode::Char('s'))), Action::Stop);
        assert_eq!(s.on_key(key(KeyCode::Char('r'))), Action::Start);
        assert_eq!(s.on_key(key(KeyCode::Char('2'))), Action::Toggle(2));
        assert_eq!(s.on_key(key(KeyCode::Char('l'))), Action::LevelUp);
        assert_eq!(s.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        let views = vec![
            view("node1", 1, "leader", Some((1, "node1"))),
            view("node2", 2, "stopped", None),
        ];
        let lines: Vec<LogLine> = (0..5).map(|i| log_line(&format!("line {i}"))).collect();
        let screen = Screen {
            log_scroll: 1_000,
            ..Screen::default()
        };
        for (w, h) in [(1, 1), (10, 5), (30, 8), (200, 3)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal
                .draw(|f| draw_node(f, &views[0], &lines, &screen))
                .unwrap();
            terminal
                .draw(|f| draw_demo(f, &views, &lines, &screen))
                .unwrap();
            terminal.draw(|f| draw_demo(f, &[], &[], &screen)).unwrap();
        }
    }

    #[test]
    fn log_pane_scrolls() {
        let lines: Vec<LogLine> = (0..50).map(|i| log_line(&format!("line {i:02}"))).collect();
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        let v = view("node2", 2, "leader", Some((2, "node2")));
        let mut screen = Screen::default();
        terminal
            .draw(|f| draw_node(f, &v, &lines, &screen))
            .unwrap();
        assert!(screen_text(&terminal).contains("line 49"));
        for _ in 0..20 {
            screen.on_key(key(KeyCode::Up));
        }
        terminal
            .draw(|f| draw_node(f, &v, &lines, &screen))
            .unwrap();
        let text = screen_text(&terminal);
        assert!(
            !text.contains("line 49") && text.contains("line 29"),
            "{text}"
        );
        assert!(text.contains("scrolled up 20"), "{text}");
    }
}
