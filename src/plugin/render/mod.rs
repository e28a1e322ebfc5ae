//! Text for people: pure functions from the objects read to what is printed.
pub mod deployment;
pub mod history;
pub mod pipeline;

use crate::api::Verdict;
use jiff::Timestamp;

/// Colours, when the output is a terminal that wants them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

/// The few colours the plugin uses: a verdict's or a phase's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Good,
    Bad,
    Wait,
    Dim,
    Bold,
}

impl Style {
    pub const PLAIN: Style = Style { color: false };

    /// Colour when stdout is a terminal and `NO_COLOR` is unset (https://no-color.org).
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: std::io::stdout().is_terminal() && !no_color,
        }
    }

    pub fn paint(self, color: Option<Color>, text: &str) -> String {
        let code = match (self.color, color) {
            (true, Some(Color::Good)) => "32",
            (true, Some(Color::Bad)) => "31",
            (true, Some(Color::Wait)) => "33",
            (true, Some(Color::Dim)) => "2",
            (true, Some(Color::Bold)) => "1",
            _ => return text.to_string(),
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// The colour of a verdict.
pub fn verdict_color(v: Option<Verdict>) -> Option<Color> {
    match v? {
        Verdict::Pass => Some(Color::Good),
        Verdict::Fail | Verdict::Error => Some(Color::Bad),
        Verdict::Inconclusive => Some(Color::Wait),
    }
}

/// A piece of text and its colour.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    pub fn new(text: impl Into<String>, color: Option<Color>) -> Self {
        Cell {
            text: text.into(),
            color,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_string())
    }
}

/// Aligned columns, padded on the plain text so colour codes do not shift them.
pub fn table(style: Style, header: &[&str], rows: &[Vec<Cell>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
    }
    let line = |cells: Vec<Cell>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = if i == last {
                0
            } else {
                widths[i] - cell.text.chars().count() + 2
            };
            out.push_str(&style.paint(cell.color, &cell.text));
            out.push_str(&" ".repeat(pad));
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(
        header
            .iter()
            .map(|h| Cell::new(*h, Some(Color::Dim)))
            .collect(),
    )];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out
}

/// A node of a tree: its line, lines shown under it (a table), and its children.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub line: String,
    pub detail: Vec<String>,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(line: impl Into<String>) -> Self {
        Node {
            line: line.into(),
            ..Node::default()
        }
    }

    pub fn with_detail(mut self, detail: Vec<String>) -> Self {
        self.detail = detail;
        self
    }

    pub fn child(&mut self, node: Node) {
        self.children.push(node);
    }

    /// The tree, drawn with box-drawing characters.
    pub fn draw(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.line);
        out.push('\n');
        self.draw_below("", &mut out);
        out
    }

    fn draw_below(&self, prefix: &str, out: &mut String) {
        let bar = if self.children.is_empty() {
            "  "
        } else {
            "│ "
        };
        for line in &self.detail {
            out.push_str(format!("{prefix}{bar}{line}").trim_end());
            out.push('\n');
        }
        let last = self.children.len().saturating_sub(1);
        for (i, child) in self.children.iter().enumerate() {
            let (branch, next) = if i == last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            out.push_str(&format!("{prefix}{branch}{}\n", child.line));
            child.draw_below(&format!("{prefix}{next}"), out);
        }
    }
}

/// A duration as people read it: `42s`, `12m3s`, `2h5m`, `3d4h`.
pub fn short_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d{h}h"),
        _ if h > 0 => format!("{h}h{m}m"),
        _ if m > 0 && s > 0 => format!("{m}m{s}s"),
        _ if m > 0 => format!("{m}m"),
        _ => format!("{s}s"),
    }
}

/// The time since `t`: `5m`, `2d3h`, or `-` when unknown.
pub fn age(now: Timestamp, t: Option<Timestamp>) -> String {
    t.map(|t| short_duration(now.as_second() - t.as_second()))
        .unwrap_or_else(|| "-".into())
}

/// A time between two instants, or `-`.
pub fn between(from: Option<Timestamp>, to: Option<Timestamp>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => short_duration(b.as_second() - a.as_second()),
        _ => "-".into(),
    }
}

/// A measured number: four significant digits at most, no trailing zeros.
pub fn num(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A metric's acceptable range from its effective bounds.
pub fn bound(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{}..{}", num(Some(a)), num(Some(b))),
        (Some(a), None) => format!(">= {}", num(Some(a))),
        (None, Some(b)) => format!("<= {}", num(Some(b))),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(num(Some(0.0049)), "0.0049");
        assert_eq!(num(Some(0.182)), "0.182");
        assert_eq!(num(Some(410.0)), "410");
        assert_eq!(num(Some(12345.6)), "12346");
        assert_eq!(num(Some(0.123456)), "0.1235");
        assert_eq!(num(Some(0.00001)), "1.00e-5");
        assert_eq!(num(None), "-");
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(short_duration(42), "42s");
        assert_eq!(short_duration(600), "10m");
        assert_eq!(short_duration(723), "12m3s");
        assert_eq!(short_duration(7500), "2h5m");
        assert_eq!(short_duration(3 * 86400 + 4 * 3600), "3d4h");
    }

    #[test]
    fn colour_codes_do_not_shift_columns() {
        let rows = vec![vec![Cell::new("a", Some(Color::Good)), Cell::from("b")]];
        let plain = table(Style::PLAIN, &["LONG", "X"], &rows);
        let colored = table(Style { color: true }, &["LONG", "X"], &rows);
        assert_eq!(plain, vec!["LONG  X", "a     b"]);
        assert_eq!(colored[1], "\x1b[32ma\x1b[0m     b");
    }

    #[test]
    fn trees_draw_branches_and_details() {
        let mut root = Node::new("root");
        let mut a = Node::new("a").with_detail(vec!["table".into()]);
        a.child(Node::new("a1"));
        root.child(a);
        root.child(Node::new("b").with_detail(vec!["x".into()]));
        assert_eq!(
            root.draw(),
            "root\n├─ a\n│  │ table\n│  └─ a1\n└─ b\n     x\n"
        );
    }
}
