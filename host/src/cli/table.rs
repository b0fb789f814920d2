//! Printing what the API answered: its JSON as it is, or a table.

use clap::ValueEnum;
use serde_json::Value;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// What a result is.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A list (`items`, or a bare array), with the columns worth showing.
    List(&'static [&'static str]),
    /// One object, shown as field and value.
    One,
}

pub fn print(output: Output, value: &Value, shape: Shape) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        Output::Table => print!("{}", render(value, shape)),
    }
}

/// The table as text.
pub fn render(value: &Value, shape: Shape) -> String {
    match shape {
        Shape::List(columns) => {
            let items: &[Value] = value
                .get("items")
                .and_then(Value::as_array)
                .or_else(|| value.as_array())
                .map(Vec::as_slice)
                .unwrap_or_default();
            // The preferred columns that the items have; if they have none
            // of them, every plain field of the first item.
            let mut cols: Vec<String> = columns
                .iter()
                .filter(|c| items.iter().any(|i| i.get(**c).is_some()))
                .map(|c| c.to_string())
                .collect();
            if cols.is_empty() {
                cols = items
                    .first()
                    .and_then(Value::as_object)
                    .map(|o| {
                        o.iter()
                            .filter(|(_, v)| !v.is_object() && !v.is_array())
                            .map(|(k, _)| printable(k))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| cols.iter().map(|c| cell(i.get(c))).collect())
                .collect();
            let mut out = grid(&cols, &rows);
            out.push_str(&format!(
                "({} {})\n",
                items.len(),
                if items.len() == 1 { "row" } else { "rows" }
            ));
            out
        }
        Shape::One => {
            let rows: Vec<Vec<String>> = match value.as_object() {
                Some(o) => o
                    .iter()
                    .map(|(k, v)| vec![printable(k), cell(Some(v))])
                    .collect(),
                None => vec![vec!["value".into(), cell(Some(value))]],
            };
            grid(&["field".to_string(), "value".to_string()], &rows)
        }
    }
}

/// One value as a cell: strings bare, nothing as `-`, the rest as JSON.
fn cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    printable(&text)
}

/// `text` with what could act on a terminal or reorder what it shows
/// (control characters, bidirectional overrides and isolates, zero-width
/// characters) replaced by spaces: data from the server is shown, never
/// obeyed.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let invisible = matches!(c,
                '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}' | '\u{061C}');
            if c.is_control() || invisible { ' ' } else { c }
        })
        .collect()
}

fn grid(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_show_the_chosen_columns_aligned() {
        let v = json!({"items": [
            {"id": "1", "username": "ada", "email": "ada@example.com", "extra": {"x": 1}},
            {"id": "22", "username": "grace\u{1b}[2J", "email": null}
        ]});
        let text = render(&v, Shape::List(&["id", "username", "email", "missing"]));
        assert_eq!(
            text,
            "ID  USERNAME   EMAIL\n1   ada        ada@example.com\n22  grace [2J  -\n(2 rows)\n"
        );
    }

    #[test]
    fn nothing_from_the_server_acts_on_the_terminal() {
        assert_eq!(
            printable("ad\u{1b}]0;x\u{7}min\u{202E}gpj"),
            "ad ]0;x min gpj"
        );
        let text = render(&json!({"k\u{1b}[2J": "v"}), Shape::One);
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn one_object_is_field_and_value() {
        let text = render(&json!({"id": "1", "n": 3}), Shape::One);
        assert_eq!(text, "FIELD  VALUE\nid     1\nn      3\n");
    }
}
